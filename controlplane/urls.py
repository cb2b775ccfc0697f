from django.contrib import admin
from django.urls import include, path

from controlplane.health import healthz, readyz
from controlplane.metrics import metrics_view
from controlplane.operator.views import (
    dashboard_view,
    favicon_view,
    home_view,
    live_feed_view,
    operator_view,
)

urlpatterns = [
    # Before admin.site.urls, whose catch-all would otherwise answer these paths with 404.
    path("admin/dashboard/", operator_view(dashboard_view), name="operator-dashboard"),
    path("admin/live/", operator_view(live_feed_view), name="operator-live-feed"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("", home_view, name="home"),
    path("favicon.ico", favicon_view),
    path("", include("controlplane.oauth.urls")),
]
