"""Every compute type from Azure's examples, and the values Azure rejects."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from cible.core.models import (
    AmlCompute,
    Compute,
    ComputeInstance,
    CronTrigger,
    KubernetesCompute,
    RecurrenceTrigger,
    SlurmCompute,
    SynapseSparkCompute,
    VirtualMachineCompute,
)


def test_cluster_basic(load):
    spec = load(
        """
        $schema: https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json
        name: basic-example
        type: amlcompute
        size: STANDARD_DS3_v2
        min_instances: 0
        max_instances: 2
        idle_time_before_scale_down: 120
        """,
        "compute",
    )
    compute = spec.entity
    assert isinstance(compute, AmlCompute)
    assert (compute.min_instances, compute.max_instances, compute.idle_time_before_scale_down) == (0, 2, 120)
    assert compute.tier == "dedicated"
    assert spec.warnings == []


def test_cluster_minimal_defaults_and_case_insensitive_type(load):
    compute = load("name: minimal-example\ntype: AmlCompute\n", "compute").entity
    assert isinstance(compute, AmlCompute)
    assert compute.type == "amlcompute"
    assert (compute.size, compute.min_instances, compute.max_instances) == ("Standard_DS3_v2", 0, 1)
    assert compute.enable_node_public_ip is True


def test_cluster_low_priority(load):
    compute = load("name: low-pri\ntype: amlcompute\ntier: low_priority\nmax_instances: 4\n", "compute").entity
    assert compute.tier == "low_priority"


def test_cluster_min_above_max(load_error):
    error = load_error("name: c\ntype: amlcompute\nmin_instances: 3\nmax_instances: 2\n", "compute")
    assert error.message == "job.yml:1:1: min_instances (3) must not exceed max_instances (2)"


@pytest.mark.parametrize("key, value, expected", [
    ("min_instances", "-1", "min_instances: Input should be greater than or equal to 0"),
    ("max_instances", "0", "max_instances: Input should be greater than or equal to 1"),
    ("tier", "spot", "tier: 'spot' is not one of dedicated, low_priority"),
    ("idle_time_before_scale_down", "-5", "idle_time_before_scale_down: Input should be greater than or equal to 0"),
])
def test_cluster_bad_values(load_error, key, value, expected):
    error = load_error(f"name: c\ntype: amlcompute\n{key}: {value}\n", "compute")
    assert error.message.startswith(f"job.yml:3:{len(key) + 3}: {expected}")


def test_cluster_ignored_settings_warn(load):
    spec = load(
        """
        name: c
        type: amlcompute
        location: westus
        ssh_public_access_enabled: true
        ssh_settings: {admin_username: azureuser, admin_password: pw}
        identity: {type: system_assigned}
        network_settings: {vnet_name: v, subnet: s}
        enable_node_public_ip: false
        """,
        "compute",
    )
    assert [w.split("'")[1] for w in spec.warnings] == [
        "identity", "network_settings", "ssh_settings", "location", "enable_node_public_ip",
        "ssh_public_access_enabled",
    ]
    assert spec.entity.identity.type == "system_assigned"


def test_cluster_ssh_needs_password_or_key(load_error):
    error = load_error("name: c\ntype: amlcompute\nssh_settings: {admin_username: u}\n", "compute")
    assert "ssh_settings: ssh_settings needs 'admin_password' or 'ssh_key_value'" in error.message


def test_compute_instance_with_schedules(load):
    compute = load(
        """
        name: schedule-example-i
        type: computeinstance
        size: STANDARD_DS3_v2
        idle_time_before_shutdown: PT30M
        idle_time_before_shutdown_minutes: 30
        schedules:
          compute_start_stop:
            - action: stop
              trigger:
                type: cron
                start_time: "2021-03-10T21:21:07"
                time_zone: Pacific Standard Time
                expression: 0 18 * * *
            - action: Start
              state: disabled
              trigger:
                type: recurrence
                frequency: week
                interval: 1
                start_time: 2021-03-10T21:21:07
                schedule:
                  hours: [8]
                  minutes: [0]
                  week_days: [Monday, tuesday]
        """,
        "compute",
    ).entity
    assert isinstance(compute, ComputeInstance)
    stop, start = compute.schedules.compute_start_stop
    assert isinstance(stop.trigger, CronTrigger) and stop.trigger.expression == "0 18 * * *"
    assert stop.state == "enabled"
    assert isinstance(start.trigger, RecurrenceTrigger)
    assert start.action == "start" and start.state == "disabled"
    assert start.trigger.schedule.week_days == ["monday", "tuesday"]
    assert start.trigger.start_time.startswith("2021-03-10")  # a YAML timestamp, kept as text


@pytest.mark.parametrize("body, expected", [
    ("idle_time_before_shutdown: 30 minutes\n", "idle_time_before_shutdown: '30 minutes' is not an ISO-8601 duration"),
    ("idle_time_before_shutdown: PT\n", "is not an ISO-8601 duration"),
    ("idle_time_before_shutdown_minutes: 0\n", "Input should be greater than or equal to 1"),
    ("idle_time_before_shutdown_minutes: 5000\n", "Input should be less than or equal to 4320"),
    ("schedules:\n  compute_start_stop:\n    - action: stop\n      trigger: {type: cron, expression: '0 18 *'}\n",
     "schedules.compute_start_stop[0].trigger.expression: '0 18 *' is not a 5-field cron expression"),
    ("schedules:\n  compute_start_stop:\n    - action: pause\n      trigger: {type: cron, expression: '0 18 * * *'}\n",
     "schedules.compute_start_stop[0].action: 'pause' is not one of start, stop"),
    ("ssh_public_access_enabled: true\n", "ssh_public_access_enabled: true needs ssh_settings.ssh_key_value"),
])
def test_compute_instance_bad_values(load_error, body, expected):
    error = load_error("name: ci\ntype: computeinstance\n" + body, "compute")
    assert expected in error.message
    assert error.message.startswith("job.yml:")


def test_kubernetes_attach(load):
    compute = load(
        """
        name: k8s-compute
        type: Kubernetes
        resource_id: /subscriptions/s/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/c
        properties: {a: b}
        """,
        "compute",
    ).entity
    assert isinstance(compute, KubernetesCompute)
    assert compute.namespace == "default"


def test_virtual_machine_attach(load):
    compute = load(
        """
        name: vm-attach
        type: virtualmachine
        resource_id: 10.0.0.4
        ssh_settings:
          admin_username: azureuser
          ssh_port: 22
          ssh_private_key_file: ~/.ssh/id_rsa
        """,
        "compute",
    ).entity
    assert isinstance(compute, VirtualMachineCompute)
    assert compute.ssh_settings.ssh_port == 22
    assert (compute.host, compute.ssh_port) == ("10.0.0.4", 22)


def test_virtual_machine_needs_resource_id(load_error):
    error = load_error("name: vm\ntype: virtualmachine\n", "compute")
    assert error.message == ("job.yml:1:1: missing required key 'resource_id' in virtualmachine compute\n"
                             "job.yml:1:1: missing required key 'ssh_settings' in virtualmachine compute")


VM = "name: vm\ntype: virtualmachine\nresource_id: {rid}\nssh_settings:\n  admin_username: u\n{extra}"


@pytest.mark.parametrize("rid, host, port", [
    ("box.example.com", "box.example.com", 22), ("ssh://box:2222", "box", 2222), ("'[fd00::4]'", "fd00::4", 22),
    ("127.0.0.3", "127.0.0.3", 22)])
def test_virtual_machine_address(load, rid, host, port):
    vm = load(VM.format(rid=rid, extra="  ssh_private_key_file: /k\n"), "compute").entity
    assert (vm.host, vm.ssh_port) == (host, port)


@pytest.mark.parametrize("rid, words", [
    ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm", "is an Azure resource id"),
    ("'http://box'", "is not a host"), ("'box/x'", "is not a host"), ("'u@box'", "is not a host"),
    ("'ssh://box:99999'", "is not a host")])
def test_virtual_machine_bad_address(load_error, rid, words):
    error = load_error(VM.format(rid=rid, extra="  ssh_private_key_file: /k\n"), "compute")
    assert error.message.startswith("job.yml:3:14: resource_id: ") and words in error.message


def test_virtual_machine_password_refused_where_written(load_error):
    error = load_error(VM.format(rid="box", extra="  admin_password: hunter2\n"), "compute")
    assert error.message.startswith("job.yml:6:19: ssh_settings.admin_password: cible logs in to attached machines "
                                    "with SSH keys only")
    assert "hunter2" not in error.message  # the secret is not echoed back


def test_virtual_machine_needs_a_key_or_the_agent(load, load_error):
    error = load_error(VM.format(rid="box", extra=""), "compute")
    assert "ssh_settings.ssh_private_key_file is required" in error.message
    vm = load(VM.format(rid="box", extra="cible:\n  use_ssh_agent: true\n"), "compute").entity
    assert vm.cible.use_ssh_agent and vm.ssh_settings.ssh_private_key_file is None
    error = load_error(VM.format(rid="box", extra="cible:\n  expected_host_key_fingerprint: MD5:aa\n"), "compute")
    assert "cible.expected_host_key_fingerprint" in error.message


SLURM = "name: hpc\ntype: slurm\n{extra}"
LOGIN = "login: ssh://login.example.com:2222\nssh_settings:\n  admin_username: alice\n"


def test_slurm_with_the_local_commands_and_its_defaults(load):
    hpc = load(SLURM.format(extra="partition: debug\nqos: normal\naccount: ml\ncible:\n  environment: "
                                  "{SLURM_CONF: /opt/slurm/etc/slurm.conf}\n"), "compute").entity
    assert isinstance(hpc, SlurmCompute)
    assert (hpc.login, hpc.host, hpc.ssh_settings, hpc.partition, hpc.qos, hpc.account) == (
        None, None, None, "debug", "normal", "ml")
    assert hpc.cible.environment == {"SLURM_CONF": "/opt/slurm/etc/slurm.conf"}


def test_slurm_through_a_login_host(load):
    hpc = load(SLURM.format(extra=LOGIN + "  ssh_private_key_file: /keys/alice\n"), "compute").entity
    assert (hpc.host, hpc.ssh_port, hpc.ssh_settings.admin_username) == ("login.example.com", 2222, "alice")
    agent = load(SLURM.format(extra="login: login.example.com\nssh_settings: {admin_username: alice, ssh_port: 2200}"
                                    "\ncible: {use_ssh_agent: true}\n"), "compute").entity
    assert (agent.ssh_port, agent.ssh_settings.ssh_private_key_file) == (2200, None)


@pytest.mark.parametrize("extra, words", [
    ("login: login.example.com\n", "ssh_settings.admin_username: the user cible logs in as on the login host"),
    (LOGIN, "ssh_settings.ssh_private_key_file is required"),
    ("ssh_settings: {admin_username: alice, ssh_private_key_file: /k}\n", "ssh_settings: give login"),
    ("login: /subscriptions/s/x\nssh_settings: {admin_username: a, ssh_private_key_file: /k}\n",
     "is an Azure resource id"),
    (LOGIN + "  admin_password: hunter2\n", "SSH keys only"),
    ("partition: 'a b'\n", "partition"),
    ("cible: {environment: {'1BAD': x}}\n", "'1BAD' is not a variable name"),
    ("cible: {server_url: 'ftp://x'}\n", "cible.server_url"),
    ("cible: {agent_dir: 'relative/dir'}\n", "cible.agent_dir"),
    ("cible: {tunnel: always}\n", "tunnel"),
])
def test_slurm_errors_say_what_to_write(load_error, extra, words):
    error = load_error(SLURM.format(extra=extra), "compute")
    assert words in error.message and "hunter2" not in error.message, error.message


def test_synapse_spark_attach(load):
    compute = load(
        """
        name: synapse
        type: synapsespark
        resource_id: /subscriptions/s/resourceGroups/rg/providers/Microsoft.Synapse/workspaces/w/bigDataPools/p
        identity:
          type: user_assigned
          user_assigned_identities:
            - resource_id: /subscriptions/s/.../identity
        """,
        "compute",
    ).entity
    assert isinstance(compute, SynapseSparkCompute)
    assert compute.identity.user_assigned_identities[0].resource_id.endswith("identity")


def test_compute_type_required_and_known(load_error):
    assert "missing required key 'type' in compute" in load_error("name: c\n", "compute").message
    error = load_error("name: c\ntype: databricks\n", "compute")
    assert error.message == ("job.yml:2:7: type: 'databricks' is not one of amlcompute, computeinstance, "
                             "kubernetes, virtualmachine, slurm, synapsespark")


def test_compute_union_discriminates_on_type():
    adapter = TypeAdapter(Compute)
    assert isinstance(adapter.validate_python({"type": "kubernetes", "name": "k"}), KubernetesCompute)
    assert isinstance(adapter.validate_python({"type": "amlcompute", "name": "c"}), AmlCompute)


@pytest.mark.parametrize("example", ["vm-attach.yml", "attached-cluster.yml", "slurm.yml", "slurm-login.yml"])
def test_the_attached_examples_load(example):
    from pathlib import Path

    from cible.core.specs.azureml.loader import load_spec

    loaded = load_spec(Path(__file__).resolve().parents[3] / "examples" / "attached" / example, "compute")
    assert loaded.warnings == []  # every key of them is acted on
    if loaded.entity.type == "virtualmachine":
        assert (loaded.entity.host, loaded.entity.ssh_port) == ("box.example.com", 22)
    elif loaded.entity.type == "slurm":
        assert loaded.entity.partition == "debug"
        assert loaded.entity.host == (None if example == "slurm.yml" else "login.example.com")
    else:
        assert loaded.entity.cible.hosts == ["gpu-box-a", "gpu-box-b"]
