"""The parts of `slmdeploy serve --ray` that need no cluster: the ``[serve]`` keys and flags, each model deployment's
Ray Serve options, where a built package is in the cache, and the replicas' metrics summed into one server's."""

from __future__ import annotations

import json

import click
import pytest

from slmdeploy.cli.serve import cluster_options
from slmdeploy.config.project import load_project
from slmdeploy.config.serving import ServeTable
from slmdeploy.errors import ConfigError
from slmdeploy.serve.cluster.options import ClusterOptions, deployment_options, measured_peak_bytes
from slmdeploy.serve.cluster.packages import place, verify
from slmdeploy.serve.models import PACKAGE_FILE, ModelSpec
from slmdeploy.serve.pool import Limits

PROJECT = '[project]\nname = "m"\n[source]\npath = "model"\n[convert]\nplugin = "olive"\n'


@pytest.mark.parametrize(
    ("table", "line", "words"),
    [
        ('autoscale = "2:1"', 9, "autoscale must be \"MIN:MAX\" with whole numbers 1 <= MIN <= MAX, not '2:1'"),
        ('autoscale = "two"', 9, "not 'two'"),
        ('replicas = 3\nautoscale = "1:2"', 10, "autoscale must be left out when replicas is set (replicas = 3)"),
        ("replicas = 0", 9, "replicas must be >= 1"),
        ('ray = "yes"', 9, "ray must be"),
    ],
)
def test_serve_keys_are_checked_where_the_file_is_read(slmdeploy_project, table, line, words):
    project = slmdeploy_project(f"{PROJECT}\n[serve]\n{table}\n")
    with pytest.raises(ConfigError) as raised:
        load_project(project.file)
    assert raised.value.where == f"slmdeploy.toml:{line}"
    assert words in str(raised.value)


def test_flags_replace_the_tables_replicas_and_autoscale():
    table = ServeTable(ray=True, address="10.0.0.1:6379", autoscale="1:3", upscale_delay=1.0, downscale_delay=5.0)
    assert cluster_options(table, None, None, None, None).autoscale == (1, 3)
    fixed = cluster_options(table, "127.0.0.1:1", 2, None, None)
    assert (fixed.address, fixed.replicas, fixed.autoscale) == ("127.0.0.1:1", 2, None)
    assert cluster_options(table, None, None, "2:4", None).autoscale == (2, 4)
    with pytest.raises(click.UsageError, match="not both"):
        cluster_options(table, None, 2, "1:2", None)
    with pytest.raises(click.BadParameter, match="MIN:MAX"):
        cluster_options(table, None, None, "3:1", None)


def test_a_deployment_asks_for_the_threads_and_the_measured_peak_and_scales_on_the_batch():
    limits = Limits(max_batch=4, max_queue=6, timeout_s=90.0)
    fixed = deployment_options(limits, ClusterOptions(replicas=2), threads=3, memory_bytes=500_000_000)
    assert fixed["ray_actor_options"] == {"num_cpus": 3, "memory": 500_000_000}
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 11  # rows + queue + one: the replica's own 429 answers past them
    assert fixed["graceful_shutdown_timeout_s"] == 90.0  # a stopping replica's rows may run their whole time
    scaled = deployment_options(limits, ClusterOptions(autoscale=(1, 3), upscale_delay_s=2.0), 1, None)
    assert scaled["ray_actor_options"] == {"num_cpus": 1}
    assert scaled["autoscaling_config"] == {
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4,
        "upscale_delay_s": 2.0, "downscale_delay_s": 600.0, "look_back_period_s": 2.0,
    }  # fmt: skip


def test_the_measured_peak_is_read_from_the_report(tmp_path):
    (tmp_path / "model").mkdir()
    assert measured_peak_bytes(tmp_path / "model") is None
    report = {"evaluators": {"benchmark": {"metrics": {"peak_rss_mb": 412.5}}}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert measured_peak_bytes(tmp_path / "model") == 412_500_000


def test_a_package_given_by_path_is_checked_by_its_files(tmp_path):
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / PACKAGE_FILE).write_text("{}")
    placed = place(ModelSpec("m", folder), None)
    assert placed.entry is None and placed.spec.folder == folder
    verify(placed)
    (folder / PACKAGE_FILE).write_text('{"changed": 1}')
    with pytest.raises(Exception, match=f"has the digest .* not {placed.digest[:12]}"):
        verify(placed)


def test_replica_metrics_are_summed_into_one_server():
    prometheus_client = pytest.importorskip("prometheus_client")
    from slmdeploy.serve.cluster.stats import merged_metrics

    texts = []
    for served in (3, 4):
        registry = prometheus_client.CollectorRegistry()
        counter = prometheus_client.Counter("req", "Requests", ["model"], registry=registry)
        counter.labels("tiny").inc(served)
        texts.append(prometheus_client.generate_latest(registry).decode())
    body, _ = merged_metrics([{"replica": "a", "metrics": texts[0]}, {"replica": "b", "metrics": texts[1]}])
    assert 'req_total{model="tiny"} 7.0' in body.decode().splitlines()
