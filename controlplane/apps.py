from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Qontak MCP control plane"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditlog.registry import auditlog
        from django.db.models.signals import post_delete, post_save
        from oauth2_provider.models import AccessToken, Application

        from controlplane import config_version, models, policies
        from controlplane.oauth.validator import access_token_deleted

        auditlog.register(models.Tenant)
        auditlog.register(models.QontakCredential)
        # The digest stays out of the log: with the pepper, it would let a reader check keys.
        auditlog.register(models.ApiKey, exclude_fields=["digest"])
        auditlog.register(models.RateLimitPolicy)
        auditlog.register(models.ToolPolicy)
        auditlog.register(models.TenantMembership)
        auditlog.register(models.DisabledClient)
        auditlog.register(models.TrustedClientHost)
        # What workers cache per configuration version (see controlplane.config_version).
        for model in (
            models.Tenant,
            models.ApiKey,
            models.RateLimitPolicy,
            models.ToolPolicy,
            models.TenantMembership,
            models.DisabledClient,
            Application,
        ):
            uid = f"config-version-{model.__name__}"
            post_save.connect(config_version.config_changed, sender=model, dispatch_uid=uid)
            post_delete.connect(config_version.config_changed, sender=model, dispatch_uid=uid)
        # A connection or token that ends (removed member, revoked grant, reused refresh token)
        # is announced; one rotated away is not (see controlplane.oauth.validator).
        post_delete.connect(
            config_version.config_changed,
            sender=models.OAuthConnection,
            dispatch_uid="config-version-OAuthConnection",
        )
        post_delete.connect(
            access_token_deleted, sender=AccessToken, dispatch_uid="config-version-AccessToken"
        )
        for model in (models.RateLimitPolicy, models.ToolPolicy):
            post_save.connect(policies.policy_changed, sender=model, dispatch_uid=model.__name__)
            post_delete.connect(policies.policy_changed, sender=model, dispatch_uid=model.__name__)
