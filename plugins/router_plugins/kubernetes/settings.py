"""The kubernetes plugin's settings (``plugins[].config`` for ``name: kubernetes``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.config.types import Duration

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class KubernetesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ingress_class: str = Field("commons-router", min_length=1)
    """Ingresses with this ``spec.ingressClassName`` (or legacy annotation) are ours."""
    controller: str = Field("commons-router.io/ingress-controller", min_length=1)
    """``spec.controller`` of our IngressClass (it decides whether the class is default)."""
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty: all."""
    shared_hosts: bool = False
    """False: a host belongs to one namespace (see ``ownership``); Ingresses in other
    namespaces cannot add routes to it. True: any namespace may (plain Ingress rules)."""
    host_release_delay: Duration = 300.0
    """How long a namespace keeps a host after its last Ingress for it is gone (so a
    redeploy never hands the host to another namespace)."""
    credentials: Literal["auto", "in_cluster", "kubeconfig"] = "auto"
    """``auto``: in-cluster when KUBERNETES_SERVICE_HOST is set, else the kubeconfig."""
    kubeconfig: str | None = None
    """Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)."""
    context: str | None = None
    """Kubeconfig context (default: the current one)."""
    service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"
    pod_label_selector: str | None = None
    """Only watch pods with these labels (e.g. ``commons-router.io/backend=true``)."""
    page_size: int = Field(500, ge=1, le=10000)
    watch_timeout: int = Field(300, ge=1, le=3600)
    """``timeoutSeconds`` of each watch call; the watch then resumes where it stopped."""
    sync_timeout: Duration = 60.0
    """At start, wait this long for the first complete list of every resource."""
    backoff_initial: Duration = 0.5
    backoff_max: Duration = 30.0

    @field_validator("namespaces")
    @classmethod
    def _check_namespaces(cls, value: list[str]) -> list[str]:
        for namespace in value:
            if not re.match(_DNS_LABEL, namespace) or len(namespace) > 63:
                raise ValueError(f"invalid namespace {namespace!r}")
        if len(set(value)) != len(value):
            raise ValueError("namespaces are listed twice")
        return value
