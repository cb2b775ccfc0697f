from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Qontak MCP control plane"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from controlplane import models

        for model in (
            models.Tenant,
            models.QontakCredential,
            models.ApiKey,
            models.RateLimitPolicy,
            models.ToolPolicy,
        ):
            auditlog.register(model)
