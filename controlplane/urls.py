from django.contrib import admin
from django.urls import path

from controlplane.health import healthz
from controlplane.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]
