"""The offline Terraform checker: the real tree passes; each kind of mistake fails by name.

Broken trees are copies of terraform/ in tmp_path with one deliberate edit, so every test pins
what a platform engineer would actually get wrong (a typo in a variable, a secret with a
default, a template reading a value the call site forgot) and that the message names the file,
the line and the item.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from taigimed.tfcheck import (
    Finding,
    blocks,
    check_tree,
    main,
    mask_non_code,
    parse_hcl,
    parse_template,
    render_template,
    template_names,
    unquote,
)

REPO = Path(__file__).resolve().parents[2]
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


def test_resource_in_alias_only_module_must_name_its_provider(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(
        main_tf,
        '  provider   = openstack.kvm\n  name       = "${var.name_prefix}-key"',
        '  name       = "${var.name_prefix}-key"',
    )
    finding = only_error(check_tree(tree))
    assert "openstack_compute_keypair_v2.kvm must set provider" in finding.message
    assert finding.line == line_containing(main_tf, '"openstack_compute_keypair_v2" "kvm"')


def test_unpinned_provider_is_an_error(tree: Path) -> None:
    edit(tree / "modules/network/versions.tf", '      version = "~> 3.0"\n', "")
    assert (
        'provider "openstack" is used in network/ but not pinned'
        in only_error(check_tree(tree)).message
    )


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
        'node-name: "${node_name}"',
        'node-name: "${node_name}"\n      node-ip: "${private_ip}"',
    )
    found = errors(check_tree(tree))
    call_site = [f for f in found if "does not pass it" in f.message]
    # Two call sites (CPU workers and the GPU node) render the agent template.
    assert len(call_site) == 2
    assert all(f.path == template for f in call_site)
    assert all(f.line == line_containing(template, "${private_ip}") for f in call_site)
    assert all("'private_ip'" in f.message and "main.tf:" in f.message for f in call_site)
    # The samples lack it too, so rendering fails with the same name.
    assert any(
        "rendering with sample set" in f.message and "'private_ip'" in f.message for f in found
    )


def test_call_site_dropping_a_value_is_an_error_at_the_template_line(tree: Path) -> None:
    main_tf = tree / CLUSTER / "main.tf"
    edit(main_tf, "    node_taints  = []\n", "")
    finding = only_error(check_tree(tree))
    assert finding.path.name == "k3s-agent.yaml.tftpl"
    assert "'node_taints'" in finding.message
    assert f"main.tf:{line_containing(main_tf, 'k3s-agent.yaml.tftpl')}" in finding.message


def test_unused_template_value_is_a_warning(tree: Path) -> None:
    edit(
        tree / CLUSTER / "main.tf",
        "    gpu          = false\n",
        "    gpu          = false\n    unused_value = 1\n",
    )
    findings = check_tree(tree)
    assert errors(findings) == []
    assert any("passes 'unused_value'" in f.message and f.severity == "warning" for f in findings)


def test_template_rendering_to_invalid_yaml_is_an_error(tree: Path) -> None:
    template = tree / CLUSTER / "templates/k3s-server.yaml.tftpl"
    edit(template, "packages:\n  - curl\n  - jq\n", "packages:\n  - curl\n - jq\n")
    messages = [f.message for f in errors(check_tree(tree))]
    assert messages and all("not valid YAML" in m for m in messages)


def test_embedded_yaml_file_is_validated(tree: Path) -> None:
    template = tree / CLUSTER / "templates/k3s-server.yaml.tftpl"
    edit(template, 'token: "${k3s_token}"', 'token: "${k3s_token}')
    messages = [f.message for f in errors(check_tree(tree))]
    assert any("write_files /etc/rancher/k3s/config.yaml is not valid YAML" in m for m in messages)


def test_template_must_start_with_cloud_config(tree: Path) -> None:
    template = tree / CLUSTER / "templates/k3s-agent.yaml.tftpl"
    edit(template, "#cloud-config\n", "")
    messages = [f.message for f in errors(check_tree(tree))]
    assert any("must start with a '#cloud-config' line" in m for m in messages)


def test_template_without_samples_is_an_error(tree: Path) -> None:
    samples = tree / CLUSTER / "templates/samples.yaml"
    text = samples.read_text(encoding="utf-8")
    samples.write_text(text.split("k3s-agent.yaml.tftpl:")[0], encoding="utf-8")
    finding = only_error(check_tree(tree))
    assert "no sample values for k3s-agent.yaml.tftpl" in finding.message


# --- the template language itself -------------------------------------------------------------


def test_strip_markers_match_terraform() -> None:
    """`~}` eats whitespace up to and including the next newline, not the next line's indent."""
    text = "list:\n%{ for x in xs ~}\n  - ${x}\n%{ endfor ~}\nend: ${n}\n"
    rendered = render_template(parse_template(text), {"xs": ["a", "b"], "n": 2})
    assert rendered == "list:\n  - a\n  - b\nend: 2\n"


def test_if_else_escapes_and_functions() -> None:
    text = (
        '%{ if on }on%{ else }off%{ endif } $${literal} ${upper(join(",", xs))} ${length(xs) > 1}'
    )
    nodes = parse_template(text)
    assert render_template(nodes, {"on": False, "xs": ["a", "b"]}) == "off ${literal} A,B true"
    assert template_names(nodes) == {"on": 1, "xs": 1}


def test_for_loop_variable_is_not_a_template_input() -> None:
    nodes = parse_template("%{ for k, v in m ~}\n${k}=${v}\n%{ endfor ~}\n")
    assert set(template_names(nodes)) == {"m"}
    assert render_template(nodes, {"m": {"a": 1}}) == "a=1\n"


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ('${lookup(m, "a")}', {"m": {}}, r"function lookup\(\) is not supported offline"),
        ("${xs}", {"xs": [1]}, "cannot interpolate a list"),
        ("${x}", {"x": None}, "interpolated value is null"),
        ("${missing}", {}, "template uses 'missing', which no value provides"),
    ],
)
def test_render_errors_say_what_is_wrong(text: str, values: dict, message: str) -> None:
    from taigimed.tfcheck import TemplateError

    with pytest.raises(TemplateError, match=message):
        render_template(parse_template(text), values)


def test_unclosed_directive_names_its_line() -> None:
    from taigimed.tfcheck import TemplateError

    with pytest.raises(TemplateError) as info:
        parse_template("a\nb\n%{ if x }\nc\n")
    assert info.value.line == 3


# --- command line -----------------------------------------------------------------------------


def test_cli_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "cloud-config" in capsys.readouterr().out


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
    (tree / "modules/node/README.md").unlink()
    assert main([str(tree)]) == 0
    assert main([str(tree), "--warnings-as-errors"]) == 1
