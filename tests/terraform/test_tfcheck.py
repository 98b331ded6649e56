"""The offline Terraform checker (tools/tfcheck.py): the real tree passes; each kind of
mistake fails by name; the cloud-init templates render into valid cloud-config.

Broken trees are copies of terraform/ in tmp_path with one deliberate edit, so every test pins
what a platform engineer would actually get wrong (a typo in a variable, a secret with a
default, a template reading a value the call site forgot) and that the message names the file,
the line and the item.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from tfcheck import (  # noqa: E402  (tools/ is not a package of the runtime)
    Finding,
    blocks,
    check_tree,
    main,
    mask_non_code,
    parse_hcl,
    template_names,
    unquote,
)

TERRAFORM = REPO / "terraform"
CLUSTER = Path("modules/cluster")
ENV = Path("envs/chameleon")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A private copy of terraform/ to break on purpose."""
    dest = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, dest, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    return dest


def edit(path: Path, old: str, new: str) -> None:
    """Replace one exact snippet, failing loudly if the fixture text drifted."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}; update the test to the new file"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def line_containing(path: Path, snippet: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if snippet in line:
            return number
    raise AssertionError(f"{snippet!r} not in {path}")


def only_error(findings: list[Finding]) -> Finding:
    found = errors(findings)
    assert len(found) == 1, "\n".join(f.format() for f in found)
    return found[0]


# --- the real tree ----------------------------------------------------------------------------


def test_real_tree_is_clean() -> None:
    findings = check_tree(TERRAFORM)
    assert findings == [], "\n".join(f.format() for f in findings)


def test_real_tree_is_terraform_fmt_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on PATH; make tf-check runs fmt where it exists")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"files need terraform fmt: {result.stdout}"


def test_manifest_labels_and_taints_are_the_agreed_ones() -> None:
    """Manifests select on these exact strings; a rename here would strand every pod."""
    main_tf = (TERRAFORM / CLUSTER / "main.tf").read_text(encoding="utf-8")
    for label in (
        '"taigimed.io/role=control"',
        '"taigimed.io/pool=cpu"',
        '"taigimed.io/accelerator=nvidia-gpu"',
        '"nvidia.com/gpu.present=true"',
        '"nvidia.com/gpu=present:NoSchedule"',
    ):
        assert label in main_tf


def test_device_plugin_version_matches_the_argo_chart() -> None:
    """Terraform's fallback device plugin and Argo CD's chart must be one release, not two."""
    import yaml

    parsed = parse_hcl((TERRAFORM / CLUSTER / "variables.tf").read_text(encoding="utf-8"))
    variables = dict(blocks(parsed, "variable"))
    terraform_tag = unquote(variables["nvidia_device_plugin_version"]["default"])
    app = yaml.safe_load((REPO / "argo/apps/platform-nvidia-device-plugin.yaml").read_text())
    assert terraform_tag == f"v{app['spec']['source']['targetRevision']}"


# --- references and declarations -------------------------------------------------------------


def test_undeclared_variable_is_an_error_naming_file_and_line(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(main_tf, "flavor_name     = var.cpu_flavor", "flavor_name     = var.cpu_flavour")
    finding = only_error(check_tree(tree))
    assert finding.path == main_tf
    assert finding.line == line_containing(main_tf, "var.cpu_flavour")
    assert "var.cpu_flavour is not declared" in finding.message


def test_reference_inside_a_string_interpolation_is_checked(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(main_tf, 'name       = "${var.name_prefix}-key"', 'name       = "${var.prefix}-key"')
    assert "var.prefix is not declared" in only_error(check_tree(tree)).message


def test_text_that_only_mentions_var_in_a_description_is_not_a_reference() -> None:
    masked = mask_non_code('variable "a" {\n  description = "set var.b first" # var.c\n}\n')
    assert "var.b" not in masked and "var.c" not in masked
    masked = mask_non_code('x = "prefix-${var.b}"\n')
    assert "var.b" in masked


def test_undefined_local_and_missing_module_output_are_errors(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(
        main_tf, "fixed_ip_v4     = local.control_private_ip", "fixed_ip_v4     = local.control_ip"
    )
    outputs_tf = tree / CLUSTER / "outputs.tf"
    edit(outputs_tf, "module.cpu_agent[*].private_ip", "module.cpu_agent[*].internal_ip")
    messages = [f.message for f in errors(check_tree(tree))]
    assert any("local.control_ip is not defined" in m for m in messages)
    assert any(
        "module.cpu_agent.internal_ip" in m and 'no output "internal_ip"' in m for m in messages
    )


def test_undeclared_resource_reference_is_an_error(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(
        main_tf,
        "random_password.k3s_token.result\n    private_ip",
        "random_password.token.result\n    private_ip",
    )
    assert "random_password.token is referenced" in only_error(check_tree(tree)).message


def test_module_call_with_unknown_or_missing_inputs_is_an_error(tree: Path) -> None:
    env_main = tree / ENV / "main.tf"
    text = env_main.read_text(encoding="utf-8")
    renamed = re.sub(r"ssh_public_key\s*= var.ssh_public_key", "ssh_key = var.ssh_public_key", text)
    assert renamed != text
    env_main.write_text(renamed, encoding="utf-8")
    messages = [f.message for f in errors(check_tree(tree))]
    assert any("passes ssh_key" in m and "does not declare" in m for m in messages)
    assert any('does not pass required variable "ssh_public_key"' in m for m in messages)


def test_module_call_must_pass_every_configuration_alias(tree: Path) -> None:
    edit(tree / ENV / "main.tf", "    openstack.chi = openstack.chi\n", "")
    finding = only_error(check_tree(tree))
    assert "must pass provider openstack.chi" in finding.message


def test_hcl_syntax_error_names_the_line(tree: Path) -> None:
    variables = tree / CLUSTER / "variables.tf"
    edit(variables, 'default     = "m1.xlarge"', "default     = ")
    broken = line_containing(variables, 'description = "KVM flavor of the CPU workers."') + 2
    finding = only_error(check_tree(tree))
    assert finding.path == variables
    assert "HCL does not parse" in finding.message
    assert broken <= finding.line <= broken + 2


# --- variables and secrets ---------------------------------------------------------------------


def test_sensitive_variable_with_a_default_is_an_error(tree: Path) -> None:
    variables = tree / ENV / "variables.tf"
    edit(
        variables,
        '  sensitive   = true\n}\n\nvariable "chi_auth_url"',
        '  sensitive   = true\n  default     = "changeme"\n}\n\nvariable "chi_auth_url"',
    )
    finding = only_error(check_tree(tree))
    assert finding.path == variables
    assert finding.line == line_containing(
        variables, 'variable "kvm_application_credential_secret"'
    )
    assert (
        'variable "kvm_application_credential_secret" is sensitive but has a default'
        in finding.message
    )


def test_variable_without_description_or_type_is_an_error(tree: Path) -> None:
    variables = tree / "modules/node/variables.tf"
    edit(
        variables,
        '  description = "Instance name; also the Kubernetes node name k3s registers."\n',
        "",
    )
    edit(
        variables,
        '`baremetal` on CHI sites."\n  type        = string\n',
        '`baremetal` on CHI sites."\n',
    )
    messages = sorted(f.message for f in errors(check_tree(tree)))
    assert messages == [
        'variable "flavor_name" has no type: add type = string (or the right type)',
        'variable "name" has no description: add description = "..."',
    ]


def test_secret_looking_variable_must_be_sensitive(tree: Path) -> None:
    variables = tree / ENV / "variables.tf"
    variables.write_text(
        variables.read_text(encoding="utf-8")
        + '\nvariable "grafana_admin_password" {\n  description = "x"\n  type        = string\n}\n',
        encoding="utf-8",
    )
    messages = [f.message for f in errors(check_tree(tree))]
    assert any('"grafana_admin_password" looks like a secret' in m for m in messages)


def test_output_exposing_a_sensitive_value_must_be_sensitive(tree: Path) -> None:
    outputs = tree / ENV / "outputs.tf"
    edit(
        outputs,
        "  value       = module.cluster.k3s_token\n  sensitive   = true\n",
        "  value       = module.cluster.k3s_token\n",
    )
    finding = only_error(check_tree(tree))
    assert 'output "k3s_token" exposes sensitive module.cluster.k3s_token' in finding.message


def test_secret_written_into_tfvars_example_is_an_error(tree: Path) -> None:
    example = tree / ENV / "terraform.tfvars.example"
    example.write_text(
        example.read_text(encoding="utf-8") + 'kvm_application_credential_secret = "oops"\n',
        encoding="utf-8",
    )
    finding = only_error(check_tree(tree))
    assert finding.path == example
    assert "export TF_VAR_kvm_application_credential_secret" in finding.message


# --- templates --------------------------------------------------------------------------------


def test_template_reading_a_value_the_call_site_does_not_pass_is_an_error(tree: Path) -> None:
    template = tree / CLUSTER / "templates/k3s-agent.yaml.tftpl"
    edit(
        template,
        '"node-name"  = node_name',
        '"node-name"  = node_name\n        "node-ip" = private_ip',
    )
    found = errors(check_tree(tree))
    # Two call sites (CPU workers and the GPU node) render the agent template.
    assert len(found) == 2, "\n".join(f.format() for f in found)
    assert all(f.path == template for f in found)
    assert all(f.line == line_containing(template, "= private_ip") for f in found)
    assert all("reads private_ip" in f.message and "main.tf:" in f.message for f in found)


def test_call_site_dropping_a_value_is_an_error_at_the_template_line(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(main_tf, "    node_taints = []\n", "")
    finding = only_error(check_tree(tree))
    assert finding.path.name == "k3s-agent.yaml.tftpl"
    assert "reads node_taints" in finding.message
    assert finding.line == line_containing(finding.path, "length(node_taints)")
    assert f"main.tf:{line_containing(main_tf, 'k3s-agent.yaml.tftpl')}" in finding.message


def test_unused_template_value_is_a_warning(tree: Path) -> None:
    edit(
        tree / CLUSTER / "main.tf",
        "    gpu         = false\n",
        "    gpu         = false\n    unused_value = 1\n",
    )
    findings = check_tree(tree)
    assert errors(findings) == []
    assert any("passes unused_value" in f.message and f.severity == "warning" for f in findings)


def test_template_names_skip_keys_functions_attributes_and_loop_variables() -> None:
    text = (
        "#cloud-config\n${yamlencode({\n  # a comment naming ignored_name\n"
        '  hostname = node_name\n  "quoted-key" = "literal ${version} text"\n'
        "  items = [for x in xs : upper(x.name) if x.on]\n  n = length(ys) > 0 ? a : b\n})}\n"
    )
    assert set(template_names(text)) == {"node_name", "version", "xs", "ys", "a", "b"}
    assert template_names(text)["node_name"] == 4


def rendered_samples() -> list[tuple[str, str, str]]:
    """(template, sample set, rendered text) for every sample set, via terraform console."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on PATH: the templates are rendered with it")
    templates = TERRAFORM / CLUSTER / "templates"
    samples = yaml.safe_load((templates / "samples.yaml").read_text(encoding="utf-8"))
    out = []
    for template, sets in samples.items():
        for name, values in sets.items():
            expr = f'templatefile("{templates / template}", jsondecode({json_literal(values)}))'
            result = subprocess.run(
                [terraform, "console"],
                input=f"jsonencode({expr})\n",
                capture_output=True,
                text=True,
                check=False,
                cwd=templates,
                timeout=120,
            )
            assert result.returncode == 0, f"{template}/{name}: {result.stderr}"
            import json

            out.append((template, name, json.loads(json.loads(result.stdout))))
    return out


def json_literal(values: dict) -> str:
    """A Terraform string literal holding ``values`` as JSON (for jsondecode)."""
    import json

    return json.dumps(json.dumps(values)).replace("${", "$${")


def test_every_template_renders_valid_cloud_config_with_every_sample_set() -> None:
    rendered = rendered_samples()
    assert {t for t, _, _ in rendered} == {"k3s-server.yaml.tftpl", "k3s-agent.yaml.tftpl"}
    for template, name, text in rendered:
        assert text.startswith("#cloud-config\n"), f"{template}/{name}"
        doc = yaml.safe_load(text)
        assert doc["hostname"] and doc["runcmd"], f"{template}/{name}"
        for file in doc["write_files"]:
            yaml.safe_load(file["content"])  # embedded files are valid YAML too
        k3s = yaml.safe_load(doc["write_files"][0]["content"])
        if name == "gpu-agent":
            assert k3s["default-runtime"] == "nvidia"
            assert k3s["node-taint"] == ["nvidia.com/gpu=present:NoSchedule"]
            assert any("nvidia-container-toolkit" in c for c in doc["runcmd"])
        if name == "cpu-agent":
            assert "node-taint" not in k3s and "node-external-ip" not in k3s
        if name == "control-with-gpu":
            assert k3s["disable"] == ["traefik"] and len(doc["write_files"]) == 2
            plugin = yaml.safe_load(doc["write_files"][1]["content"])
            image = plugin["spec"]["template"]["spec"]["containers"][0]["image"]
            assert image == "nvcr.io/nvidia/k8s-device-plugin:v0.18.0"


def test_templates_use_no_text_directives() -> None:
    """cloud-init is one yamlencode() per template: no %{for}/%{if} text to get wrong."""
    for template in (TERRAFORM / CLUSTER / "templates").glob("*.tftpl"):
        assert "%{" not in template.read_text(encoding="utf-8"), template


# --- command line -----------------------------------------------------------------------------


def test_cli_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "references resolve" in capsys.readouterr().out


def test_cli_reports_file_line_and_exit_code(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tree)]) == 0
    edit(tree / CLUSTER / "main.tf", "count  = var.cpu_node_count", "count  = var.cpu_nodes")
    assert main([str(tree)]) == 1
    out = capsys.readouterr().out
    assert "modules/cluster/main.tf:" in out and ": error: var.cpu_nodes is not declared" in out
    assert "1 errors" in out


def test_cli_warnings_as_errors(tree: Path) -> None:
    edit(
        tree / CLUSTER / "main.tf",
        "    gpu         = false\n",
        "    gpu         = false\n    x = 1\n",
    )
    assert main([str(tree)]) == 0
    assert main([str(tree), "--warnings-as-errors"]) == 1
