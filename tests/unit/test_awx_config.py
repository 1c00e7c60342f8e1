"""awx/ (infra.aap_configuration format) against the playbooks, their variables and kubernetes.core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from saasodoo_runbooks import api

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "awx"
K8S_TYPE = "SaaSOdoo Kubernetes Bearer Token"
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
JINJA = re.compile(r"{{(.*?)}}|{%(.*?)%}", re.S)
JINJA_WORDS = {"if", "elif", "else", "endif", "not", "and", "or", "is", "in", "defined", "none", "true", "false"}
EXPRESSION_KEYS = {"when", "that", "failed_when", "changed_when", "until", "loop", "with_items"}


def load(name: str) -> dict:
    return yaml.safe_load((AWX / name).read_text()) or {}


def awx_template(text: str) -> str:
    """An injector as AWX receives it: the role turns `{  {` / `{  %` (kept from Ansible) into `{{` / `{%`."""
    return text.replace("{  {", "{{").replace("{  %", "{%")


TEMPLATES = load("job_templates.yml")["controller_templates"]
PROJECTS = load("projects.yml")
CREDENTIAL_TYPES = load("credential_types.yml")["controller_credential_types"]
WORKFLOWS = load("workflow_job_templates.yml")["controller_workflows"]


def survey_questions(template: dict) -> list[dict]:
    """The questions a template asks at launch (none when its survey is off)."""
    if not template.get("survey_enabled"):
        return []
    return template["survey_spec"]["spec"]


# ------------------------------------------------------------------------------- what a playbook reads

def _expressions(node, key=None):
    """Every Jinja expression of a YAML tree: {{ }} / {% %} in strings, and bare when:/that:/... values."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _expressions(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _expressions(v, key)
    elif isinstance(node, str):
        for a, b in JINJA.findall(node):
            yield a or b
        if key in EXPRESSION_KEYS and "{{" not in node:
            yield node


def _included_roles(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"):
                if isinstance(v, dict) and v.get("name"):
                    yield v["name"]
            elif k == "roles" and isinstance(v, list):
                for role in v:
                    yield role if isinstance(role, str) else role.get("role") or role.get("name")
            else:
                yield from _included_roles(v)
    elif isinstance(node, list):
        for v in node:
            yield from _included_roles(v)


def playbook_variables(playbook: Path) -> dict[str, object]:
    """{variable: default or None} the playbook reads: play vars, its roles' argument specs, its expressions."""
    plays = yaml.safe_load(playbook.read_text()) or []
    found: dict[str, object] = {}
    for play in plays:
        for name, value in (play.get("vars") or {}).items():
            found.setdefault(name, value)
    # The runbook's own variables file of the inventory (its defaults for a survey).
    own = ROOT / "inventories" / "local" / "group_vars" / "all" / f"{playbook.stem}.yml"
    if own.is_file():
        for name, value in (yaml.safe_load(own.read_text()) or {}).items():
            found.setdefault(name, value)
    for role in set(_included_roles(plays)):
        spec_file = ROOT / "roles" / role.split(".")[-1] / "meta" / "argument_specs.yml"
        if spec_file.is_file():
            specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
            for entry in specs.values():
                for name, option in (entry.get("options") or {}).items():
                    found.setdefault(name, option.get("default"))
    for expression in _expressions(plays):
        for name in IDENT.findall(expression):
            found.setdefault(name, None)
    return found


def test_the_variable_reader_sees_platform_down():
    names = playbook_variables(ROOT / "playbooks" / "platform_down.yml")
    assert names["platform_down_max_restarts"] == 3
    assert "platform_down_remediate" in names  # also read in when: without braces
    assert "restart_service_timeout" in names  # argument spec of an included role
    assert "no_such_variable" not in names


# ------------------------------------------------------------------------------- AWX's survey validation

# ansible/awx, awx/api/views/__init__.py, JobTemplateSurveySpec.ALLOWED_TYPES
SURVEY_TYPES = {"text": str, "textarea": str, "password": str, "multiplechoice": str, "multiselect": str,
                "integer": int, "float": float}


def awx_survey_errors(spec: dict) -> list[str]:
    """What the AWX API answers with 400 for this survey_spec, or [] when it accepts it.

    ansible/awx, awx/api/views/__init__.py, JobTemplateSurveySpec._validate_spec_data, rule by rule.
    """
    errors = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if field not in spec:
            errors.append(f"Field '{field}' is missing from survey spec.")
        elif not isinstance(spec[field], kind):
            errors.append(f"Expected {kind.__name__} for field '{field}'.")
    if isinstance(spec.get("spec"), list) and len(spec["spec"]) < 1:
        errors.append("'spec' doesn't contain any items.")
    if errors:
        return errors
    variables = set()
    for idx, item in enumerate(spec["spec"]):
        if not isinstance(item, dict):
            return [f"Survey question {idx} is not a json object."]
        for field in ("type", "question_name", "variable", "required"):
            if field not in item:
                return [f"'{field}' missing from survey question {idx}"]
            if not isinstance(item[field], bool if field == "required" else str):
                return [f"'{field}' in survey question {idx} has the wrong type."]
        if item["variable"] in variables:
            return [f"'variable' '{item['variable']}' duplicated in survey question {idx}."]
        variables.add(item["variable"])
        qtype = item["type"]
        if qtype not in SURVEY_TYPES:
            return [f"'{qtype}' in survey question {idx} is not one of the allowed question types."]
        if "default" in item and item["default"] != "" and not isinstance(item["default"], SURVEY_TYPES[qtype]):
            return [f"Default value {item['default']} in survey question {idx} expected to be {qtype}."]
        for key in ("min", "max"):
            if key in item and item[key] is not None and not isinstance(item[key], int):
                return [f"The {key} limit in survey question {idx} expected to be integer."]
        if qtype in ("multiplechoice", "multiselect"):
            if "choices" not in item:
                return [f"Survey question {idx} of type {qtype} must specify choices."]
            choices = item["choices"]
            if isinstance(choices, str):
                choices = "\n".join(c for c in choices.splitlines() if c.strip())
            if "default" in item:
                default = item["default"]
                defaults = [c for c in default.splitlines() if c.strip()] if isinstance(default, str) else default
                if qtype == "multiplechoice" and len(defaults) > 1:
                    return ["Multiple Choice (Single Select) can only have one default value."]
                if any(d not in choices for d in defaults):
                    return ["Default choice must be answered from the choices listed."]
    return errors


def test_the_reimplemented_awx_refuses_an_empty_survey():
    assert awx_survey_errors({"name": "x", "description": "", "spec": []}) == ["'spec' doesn't contain any items."]
    question = {"type": "multiplechoice", "question_name": "q", "variable": "v", "required": True,
                "choices": ["yes", "no"], "default": "maybe"}
    assert awx_survey_errors({"name": "x", "description": "", "spec": [question]}) == \
        ["Default choice must be answered from the choices listed."]


# ------------------------------------------------------------------------------- job templates

def test_every_runbook_has_exactly_one_job_template():
    runbooks = {f"playbooks/{b.path.name}" for b in api.list_runbooks(ROOT)}
    playbooks = [t["playbook"] for t in TEMPLATES]
    assert sorted(playbooks) == sorted(set(playbooks)), "two templates for one playbook"
    assert set(playbooks) == runbooks


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t["name"])
def test_job_template_matches_its_playbook(template):
    playbook = ROOT / template["playbook"]
    assert playbook.is_file(), f"{template['name']}: {template['playbook']} does not exist"
    assert not Path(template["playbook"]).name.startswith(api.HELPER_PREFIXES)
    assert template["project"] in {p["name"] for p in PROJECTS["controller_projects"]}
    assert template["inventory"] in {i["name"] for i in PROJECTS["controller_inventories"]}
    assert template["execution_environment"] in {e["name"] for e in PROJECTS["controller_execution_environments"]}
    assert template.get("job_type", "run") == "run" and template["ask_job_type_on_launch"] is True
    assert template["credentials"], "a runbook needs the Kubernetes credential"

    variables = playbook_variables(playbook)
    for question in survey_questions(template):
        name = question["variable"]
        assert name in variables, f"{template['name']}: survey variable {name} is not read by {template['playbook']}"
        default = variables[name]
        if question["type"] == "integer":
            assert isinstance(question["default"], int)
            assert question["min"] <= question["default"] <= question["max"]
            if isinstance(default, int) and not isinstance(default, bool):
                assert question["default"] == default, f"{name}: survey default differs from the playbook's"
        if question["type"] == "multiplechoice" and set(question["choices"]) == {"yes", "no"}:
            if isinstance(default, bool):
                assert question["default"] == ("yes" if default else "no"), f"{name}: default differs"
        if isinstance(default, bool) and not name.endswith("_confirm"):
            assert question["type"] == "multiplechoice" and set(question["choices"]) == {"yes", "no"}, \
                f"{name} is a boolean: a yes/no choice"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t["name"])
def test_survey_is_one_the_awx_api_accepts_or_none(template):
    if template.get("survey_enabled"):
        assert awx_survey_errors(template["survey_spec"]) == [], f"{template['name']}: AWX answers 400"
    else:
        assert "survey_spec" not in template, f"{template['name']}: survey off, so no survey_spec to send"


def test_every_confirmation_variable_is_a_required_yes_no_question():
    for template in TEMPLATES:
        variables = playbook_variables(ROOT / template["playbook"])
        asked = {q["variable"]: q for q in survey_questions(template)}
        for name in (v for v in variables if "_confirm" in v and not v.startswith("__")):
            default = variables[name]
            if isinstance(default, str) and any(q in default for q in asked if "_confirm" in q):
                continue  # e.g. data_loss_confirm_restore: "{{ restore_backup_confirm | default(false) }}"
            assert name in asked, f"{template['name']}: destructive confirmation {name} must be a survey question"
        for name, question in asked.items():
            if name.endswith("_confirm"):
                assert question["required"] is True, f"{name} must be required"
                assert question["type"] == "multiplechoice" and list(question["choices"]) == ["yes", "no"]
                assert question.get("default") in (None, "", "no"), f"{name} must not default to yes"


# ------------------------------------------------------------------------------- credential types

def _kubernetes_core_env_names() -> set[str]:
    """K8S_AUTH_<name> for each option kubernetes.core reads from the environment (both spellings)."""
    import ansible_collections.kubernetes.core.plugins.module_utils.args_common as args  # noqa: PLC0415

    return {f"K8S_AUTH_{name.upper()}" for pair in args.AUTH_ARG_MAP.items() for name in pair}


def _project_module_env_names() -> set[str]:
    """The env fallbacks of K8S_COMMON_ARGS in plugins/module_utils/saasodoo_k8s.py (read with ast)."""
    tree = ast.parse((ROOT / "plugins" / "module_utils" / "saasodoo_k8s.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("K8S_AUTH_"):
            names.add(node.value)
    return names


def _template_refs(text: str) -> set[str]:
    return {name for expr in (a or b for a, b in JINJA.findall(awx_template(text))) for name in IDENT.findall(expr)}


def test_kubernetes_credential_type_injects_what_kubernetes_core_reads():
    ctype = next(c for c in CREDENTIAL_TYPES if c["name"] == K8S_TYPE)
    fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
    assert set(fields) == {"host", "bearer_token", "verify_ssl", "ssl_ca_cert"}
    assert fields["bearer_token"]["secret"] is True
    assert fields["verify_ssl"]["type"] == "boolean"
    assert set(ctype["inputs"]["required"]) == {"host", "bearer_token"}
    env = ctype["injectors"]["env"]
    assert set(env) == {"K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "K8S_AUTH_VERIFY_SSL", "K8S_AUTH_SSL_CA_CERT"}
    assert set(env) <= _kubernetes_core_env_names(), "kubernetes.core would not read these"
    assert set(env) <= _project_module_env_names(), "the project's modules would not read these"
    assert "host" in _template_refs(env["K8S_AUTH_HOST"])
    assert "bearer_token" in _template_refs(env["K8S_AUTH_API_KEY"])
    assert "verify_ssl" in _template_refs(env["K8S_AUTH_VERIFY_SSL"])
    # The CA is a file: AWX writes the template and passes its path.
    assert "ssl_ca_cert" in _template_refs(ctype["injectors"]["file"]["template.ssl_ca_cert"])
    assert "{{ tower.filename.ssl_ca_cert }}" in awx_template(env["K8S_AUTH_SSL_CA_CERT"])
    # Ansible must not render them when the dispatch role loads the file: no plain {{ or {%.
    for value in list(env.values()) + list(ctype["injectors"]["file"].values()):
        assert "{{" not in value and "{%" not in value


@pytest.mark.parametrize("ctype", CREDENTIAL_TYPES, ids=lambda c: c["name"])
def test_credential_type_injectors_use_only_its_inputs(ctype):
    inputs = {f["id"] for f in ctype["inputs"]["fields"]}
    allowed = inputs | {"tower", "filename"} | JINJA_WORDS
    for section in ("env", "file", "extra_vars"):
        for value in (ctype["injectors"].get(section) or {}).values():
            assert _template_refs(value) <= allowed, f"{value!r} uses something that is not an input"
    for field in ctype["inputs"]["fields"]:
        if re.search(r"password|token|secret|key", field["id"]):
            assert field.get("secret") is True, f"{field['id']} must be secret"


def test_database_credential_injects_what_the_inventory_reads():
    ctype = next(c for c in CREDENTIAL_TYPES if c["name"] == "SaaSOdoo Platform Database")
    database = (ROOT / "inventories" / "local" / "group_vars" / "all" / "database.yml").read_text()
    for name in ctype["injectors"]["env"]:
        assert f"'{name}'" in database, f"the inventory does not read {name}"


def test_job_templates_use_defined_credential_names_in_the_readme():
    readme = (AWX / "README.md").read_text()
    for template in TEMPLATES:
        for credential in template["credentials"]:
            assert f"name: {credential}" in readme, f"awx/README.md must show how to create {credential}"


# ------------------------------------------------------------------------------- workflows

@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w["name"])
def test_workflow_structure_puts_an_approval_before_every_restore(workflow):
    nodes = {n["identifier"]: n for n in workflow["simplified_workflow_nodes"]}
    assert len(nodes) == len(workflow["simplified_workflow_nodes"]), "identifiers must be unique"
    children = {}
    for ident, node in nodes.items():
        assert ("approval_node" in node) != ("unified_job_template" in node), f"{ident}: a job or an approval"
        links = [c for k in ("success_nodes", "failure_nodes", "always_nodes") for c in node.get(k) or []]
        assert set(links) <= set(nodes), f"{ident} links to an unknown node"
        children[ident] = links
    roots = set(nodes) - {c for links in children.values() for c in links}
    assert roots, "a workflow needs a first node"

    def reachable_without_approval(start):
        seen, todo = set(), [start]
        while todo:
            ident = todo.pop()
            if ident in seen or "approval_node" in nodes[ident]:
                continue
            seen.add(ident)
            todo.extend(children[ident])
        return seen

    destructive = [i for i, n in nodes.items() if any(str(k).endswith("_confirm") and str(v).lower() in
                                                      ("yes", "true") for k, v in (n.get("extra_data") or {}).items())]
    assert destructive, "the Data Loss workflow restores: a node confirms it"
    for root in roots:
        assert not set(destructive) & reachable_without_approval(root), \
            "a confirmed destructive step is reachable without passing an approval node"
    for ident in destructive:
        assert nodes[ident].get("job_type", "run") == "run"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w["name"])
def test_workflow_nodes_reference_existing_job_templates(workflow):
    names = {t["name"]: t for t in TEMPLATES}
    for node in workflow["simplified_workflow_nodes"]:
        template = node.get("unified_job_template")
        if template is None:
            continue
        assert template in names, f"node {node['identifier']}: no job template {template!r}"
        spec = {q["variable"] for q in survey_questions(names[template])}
        assert set(node.get("extra_data") or {}) <= spec, f"node {node['identifier']}: extra_data not in the survey"
        if node.get("job_type"):
            assert names[template]["ask_job_type_on_launch"] is True
