"""The Kubernetes manifests in examples/ are valid, and what they configure is what the agent reads.

Offline: schemas come from the kubernetes-validate package, configs go through the core's
own parser and merge, and the DaemonSet's args go through the agent's own flag parser.
Custom resources, which kubernetes-validate has no schema for (the PrometheusRule), are
validated against a schema of their CRD kept in tests/schemas/; a kind known to neither
fails, it is never skipped. Every other file in examples/ is checked by a named test too
(the monitoring files: tests/test_monitoring.py).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from monitoring import DASHBOARD, PROMETHEUS_RULE, RULES
from referencing import Registry, Resource
from returns.result import Failure, Success

import masq
from masq.shell.cli import parse_args
from masq.shell.options import DEFAULT_METRICS_BIND

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))
SCHEMAS = Path(__file__).resolve().parent / "schemas"
# (apiVersion, kind) -> a strict JSON schema of that custom resource, written for these tests.
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS
    / "prometheusrule-monitoring.coreos.com-v1.json",
}
# Files under examples/ that are not Kubernetes manifests, and the tests that check them.
NOT_MANIFESTS = {
    RULES: "tests/test_monitoring.py (promtool check rules, promtool test rules)",
    DASHBOARD: "tests/test_monitoring.py (Grafana JSON, queries parsed by promtool)",
}
# The oldest Kubernetes release the manifests promise to work with, and the newest the
# installed kubernetes-validate knows; strict mode rejects unknown fields (a mis-indented key
# lands in the wrong object and becomes unknown there).
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for n, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc is not None:
                yield f"{path.name}#{n}", doc


DOCS = dict(documents())


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in DOCS.values() if d["kind"] == kind]


def daemonset() -> dict[str, Any]:
    (ds,) = of_kind("DaemonSet")
    return ds


def agent_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = daemonset()["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def embedded_configs() -> list[tuple[str, str, str]]:
    """(ConfigMap name, data key, text) for every config the examples carry."""
    return [
        (cm["metadata"]["name"], key, text)
        for cm in of_kind("ConfigMap")
        for key, text in sorted(cm["data"].items())
    ]


def validate_custom_resource(doc: dict[str, Any], version: str) -> None:
    """Validate against our schema of the CRD; its ObjectMeta is the one of Kubernetes
    ``version``, from kubernetes-validate's strict definitions."""
    schema = json.loads(CUSTOM_RESOURCES[(doc["apiVersion"], doc["kind"])].read_text())
    definitions_file = (
        files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(definitions_file.read_text())
    registry: Registry[Any] = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions)
    )
    jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)


def validate_manifest(doc: dict[str, Any], version: str) -> None:
    if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
        validate_custom_resource(doc, version)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def test_examples_exist() -> None:
    kinds = sorted(d["kind"] for d in DOCS.values())
    assert kinds == ["ConfigMap", "ConfigMap", "DaemonSet", "PrometheusRule"]


def test_every_file_in_examples_is_checked() -> None:
    """A new file is either a manifest validated below or named with the test that checks
    it: nothing under examples/ goes unchecked."""
    present = {p for p in EXAMPLES.rglob("*") if p.is_file()}
    assert present == set(MANIFESTS) | set(NOT_MANIFESTS)
    assert PROMETHEUS_RULE in MANIFESTS


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(DOCS))
def test_manifest_matches_kubernetes_schema(name: str, version: str) -> None:
    validate_manifest(DOCS[name], version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_custom_resources_need_their_own_schema(version: str) -> None:
    """kubernetes-validate knows built-in kinds only: without CUSTOM_RESOURCES the
    PrometheusRule could not be validated, and an unknown kind is an error here."""
    (rule,) = of_kind("PrometheusRule")
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(rule, version, strict=True)
    unknown = {**rule, "kind": "PrometheusRules"}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_manifest(unknown, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "breakage",
    [
        "for at group level",
        "alert and record",
        "no expr",
        "duration with a space",
        "unknown metadata field",
        "annotation not a string",
    ],
)
def test_prometheusrule_schema_is_strict(breakage: str, version: str) -> None:
    (rule,) = of_kind("PrometheusRule")
    broken = copy.deepcopy(rule)
    group = broken["spec"]["groups"][0]
    first = group["rules"][0]
    if breakage == "for at group level":
        group["for"] = first.pop("for")
    elif breakage == "alert and record":
        first["record"] = "ip_masq_agent:down"
    elif breakage == "no expr":
        del first["expr"]
    elif breakage == "duration with a space":
        first["for"] = "5 m"
    elif breakage == "unknown metadata field":
        broken["metadata"]["label"] = broken["metadata"].pop("labels")
    elif breakage == "annotation not a string":
        first["annotations"]["runbook"] = ["https://example.com"]
    validate_manifest(rule, version)
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(broken, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_strict_schema_catches_misindented_configmap_source(version: str) -> None:
    """The upstream v2 example nests `name` beside `configMap`; strict validation must say so."""
    ds = yaml.safe_load((EXAMPLES / "ip-masq-agent.yaml").read_text(encoding="utf-8"))
    source = ds["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"][0]
    source["name"] = source["configMap"].pop("name")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, version, strict=True)


@pytest.mark.parametrize(("configmap", "key", "text"), embedded_configs())
def test_embedded_config_parses(configmap: str, key: str, text: str) -> None:
    result = masq.parse_fragment(text, key)
    assert isinstance(result, Success), f"{configmap}/{key}: {result.failure()}"
    assert result.unwrap().source == key


def test_embedded_configs_merge_without_conflict() -> None:
    fragments = [masq.parse_fragment(text, key).unwrap() for _, key, text in embedded_configs()]
    merged = masq.merge(fragments, reserved_ranges=True)
    assert isinstance(merged, Success), str(merged.failure())
    result = merged.unwrap()
    assert list(result.conflicts) == []
    # Both files contribute: a destination from each stays unmasqueraded, the user's
    # masquerade exception wins inside its non-masquerade range, and the rest is masqueraded.
    config = result.config
    assert not masq.should_masquerade(
        config, ipaddress.ip_address("10.244.1.5")
    )  # cloud: pod range
    assert not masq.should_masquerade(
        config, ipaddress.ip_address("100.64.0.1")
    )  # user: CGNAT range
    assert masq.should_masquerade(
        config, ipaddress.ip_address("10.240.3.4")
    )  # user: masqueradeCIDRs
    assert masq.should_masquerade(config, ipaddress.ip_address("203.0.113.10"))


def test_merge_rejects_a_broken_embedded_config() -> None:
    """The parse test above can fail: a value the core rejects is a Failure naming the file."""
    (_, key, text) = embedded_configs()[0]
    broken = text.replace("masqLinkLocal: false", "masqLinkLocal: maybe")
    assert broken != text
    result = masq.parse_fragment(broken, key)
    assert isinstance(result, Failure)
    assert key in str(result.failure())


def test_daemonset_mounts_every_configmap_key_as_a_file_the_agent_reads() -> None:
    ds = daemonset()
    spec = ds["spec"]["template"]["spec"]
    opts = parse_args(agent_container()["args"]).options
    mount = {m["name"]: m for m in agent_container()["volumeMounts"]}
    (config_volume,) = [v for v in spec["volumes"] if "projected" in v]
    assert mount[config_volume["name"]]["mountPath"] == opts.config_dir
    assert mount[config_volume["name"]]["readOnly"] is True

    projected = config_volume["projected"]
    assert projected["defaultMode"] == 0o444
    sources = {s["configMap"]["name"]: s["configMap"] for s in projected["sources"]}
    assert all(cm["optional"] is True for cm in sources.values())
    configmaps = {cm["metadata"]["name"]: cm for cm in of_kind("ConfigMap")}
    assert sorted(sources) == sorted(configmaps)
    paths = []
    for name, source in sorted(sources.items()):
        assert configmaps[name]["metadata"]["namespace"] == ds["metadata"]["namespace"]
        assert sorted(item["key"] for item in source["items"]) == sorted(configmaps[name]["data"])
        for item in source["items"]:
            assert item["mode"] == 0o444
            assert item["path"].startswith(opts.config_prefix)
            assert not item["path"].startswith(".")
            paths.append(item["path"])
    assert len(set(paths)) == len(paths), "two ConfigMap keys would land on one file"


def test_daemonset_probes_use_the_metrics_port() -> None:
    container = agent_container()
    opts = parse_args(container["args"]).options
    default_port = DEFAULT_METRICS_BIND.port
    assert opts.metrics_bind_address is not None
    assert opts.metrics_bind_address.port == default_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": default_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": default_port}
    assert [p["containerPort"] for p in container["ports"]] == [default_port]


def test_daemonset_runs_with_least_privilege() -> None:
    ds = daemonset()
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    security = agent_container()["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    resources = agent_container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]
