"""awx/ (infra.aap_configuration format) against the playbooks, the loader and AWX itself.

What AWX and the loader do is reimplemented here from their sources (each cited where it is used),
so these tests judge the files by what a real load and a real job would make of them: the
credential injectors go through the loader's escaping and then AWX's Jinja rendering, every survey
through the AWX API's validation, and the database credential must sit on exactly the templates whose
playbooks read the database password.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from jinja2 import sandbox

from saasodoo_runbooks import api

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "awx"
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
JINJA = re.compile(r"{{(.*?)}}|{%(.*?)%}", re.S)
JINJA_WORDS = {"if", "elif", "else", "endif", "not", "and", "or", "is", "in", "defined", "none", "true", "false"}
EXPRESSION_KEYS = {"when", "that", "failed_when", "changed_when", "until", "loop", "with_items"}

K8S_CREDENTIAL = "SaaSOdoo Kubernetes"
DB_CREDENTIAL = "SaaSOdoo Platform Database"
DB_CREDENTIAL_TYPE = "SaaSOdoo Platform Database"
# The environment variable the database credential injects and the inventory reads (database.yml).
DB_PASSWORD_ENV = "SAASODOO_DB_PASSWORD"
CONFIG_FILES = ("credential_types.yml", "projects.yml", "job_templates.yml", "workflow_job_templates.yml")


def load(name: str) -> dict:
    return yaml.safe_load((AWX / name).read_text()) or {}


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


# ------------------------------------------------------------------------------- the loader and AWX

def loader_injectors(injectors: dict) -> dict:
    """The injectors as infra.aap_configuration's controller_credential_types role hands them to AWX.

    redhat-cop/infra.aap_configuration, roles/controller_credential_types/tasks/main.yml, as it reads
    before PR #1341 (which added the same for `{  %`, a year after 3.1.0, the version
    awx/requirements.yml pins):

        injectors: "{{ __controller_credential_type_item.injectors | default(...)
                       | regex_replace('{  {', '{_~~remove~~_{') | regex_replace('_~~remove~~_', '') }}"

    regex_replace works on the text of the dict (its Python repr); that text becomes a dict again by
    literal_eval (Ansible's template result conversion before ansible-core 2.19; from 2.19 the
    module's `type: dict` check, check_type_dict). `{  %` is left as it is.
    """
    text = str(injectors)
    text = re.sub("{  {", "{_~~remove~~_{", text)
    text = re.sub("_~~remove~~_", "", text)
    return ast.literal_eval(text)


def sample_inputs(ctype: dict) -> dict:
    """A credential of this type with every field filled in (booleans true)."""
    return {f["id"]: True if f.get("type") == "boolean" else f"sample-{f['id']}-value"
            for f in ctype["inputs"]["fields"]}


def awx_render_env(ctype: dict, injectors: dict, inputs: dict) -> dict[str, str]:
    """The environment a job gets from a custom credential type, rendered the way AWX renders it.

    ansible/awx, awx/main/models/credential/__init__.py, CredentialType.inject_credential: the
    namespace holds the non-empty inputs (booleans as they are, missing booleans False) and `tower`;
    each file injector is rendered and written, its path set as tower.filename.<name>; each env
    injector is rendered with jinja2.sandbox.ImmutableSandboxedEnvironment().
    """
    namespace: dict = {"tower": SimpleNamespace()}
    for field in ctype["inputs"]["fields"]:
        value = inputs.get(field["id"])
        if isinstance(value, bool) or value:
            namespace[field["id"]] = value
        elif field.get("type") == "boolean":
            namespace[field["id"]] = False
    env = sandbox.ImmutableSandboxedEnvironment()
    for label, template in (injectors.get("file") or {}).items():
        env.from_string(template).render(**namespace)
        path = f"/runner/env/tmp_{label.replace('.', '_')}"
        if "." not in label:
            namespace["tower"].filename = path
        else:
            if not hasattr(namespace["tower"], "filename"):
                namespace["tower"].filename = SimpleNamespace()
            setattr(namespace["tower"].filename, label.split(".")[1], path)
    return {name: env.from_string(template).render(**namespace)
            for name, template in (injectors.get("env") or {}).items()}


def awx_kubernetes_bearer_token_env(inputs: dict) -> dict[str, str]:
    """AWX's built-in "OpenShift or Kubernetes API Bearer Token" injector (no template: Python).

    ansible/awx, awx/main/models/credential/injectors.py, kubernetes_bearer_token(): without
    verify_ssl AND a CA, it sets K8S_AUTH_VERIFY_SSL to False.
    """
    env = {"K8S_AUTH_HOST": inputs.get("host", ""), "K8S_AUTH_API_KEY": inputs.get("bearer_token", "")}
    if inputs.get("verify_ssl", True) and "ssl_ca_cert" in inputs:
        env["K8S_AUTH_VERIFY_SSL"] = "True"
        env["K8S_AUTH_SSL_CA_CERT"] = "/runner/env/tmp_ca"
    else:
        env["K8S_AUTH_VERIFY_SSL"] = "False"
    return env


# ansible/awx, awx/main/models/credential/__init__.py: ManagedCredentialType(namespace='kubernetes_bearer_token')
BUILTIN_K8S_TYPE = "OpenShift or Kubernetes API Bearer Token"
BUILTIN_K8S_FIELDS = {"host", "bearer_token", "verify_ssl", "ssl_ca_cert"}

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


def test_the_reimplemented_loader_and_awx_show_the_old_kubernetes_injector_broken():
    """The custom Kubernetes type this repository had: its `{  % if %}` reached every job as text."""
    old = {"file": {"template.ssl_ca_cert": "{  { ssl_ca_cert }}"},
           "env": {"K8S_AUTH_HOST": "{  { host }}",
                   "K8S_AUTH_SSL_CA_CERT": "{  % if ssl_ca_cert %}{  { tower.filename.ssl_ca_cert }}{  % endif %}"}}
    ctype = {"inputs": {"fields": [{"id": "host", "type": "string"}, {"id": "ssl_ca_cert", "type": "string"}]}}
    env = awx_render_env(ctype, loader_injectors(old), {"host": "https://h:6443", "ssl_ca_cert": "PEM"})
    assert env["K8S_AUTH_HOST"] == "https://h:6443"
    assert env["K8S_AUTH_SSL_CA_CERT"] == \
        "{  % if ssl_ca_cert %}/runner/env/tmp_template_ssl_ca_cert{  % endif %}", "a literal, non-existent path"


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
    assert K8S_CREDENTIAL in template["credentials"], "a runbook needs the Kubernetes credential"

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


# ------------------------------------------------------------------------------- who reads the database

INCLUDE_TASKS = ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks", "include_tasks", "import_tasks")
INCLUDE_ROLE = ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role")


def _references(node) -> set[str]:
    """Every name a YAML tree's Jinja expressions (and bare when:/that:/...) refer to."""
    return {name for expression in _expressions(node) for name in IDENT.findall(expression)}


def database_password_variables() -> set[str]:
    """The variables that carry the database password: the one whose definition reads SAASODOO_DB_PASSWORD
    (inventories/), and every variable defined from one of them, in the inventory or a role's defaults."""
    definitions: dict[str, list] = {}
    for path in [*sorted((ROOT / "inventories").rglob("*.yml")), *sorted(ROOT.glob("roles/*/defaults/main.yml"))]:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict):
            for name, value in data.items():
                definitions.setdefault(name, []).append(value)
    found = {name for name, values in definitions.items() if DB_PASSWORD_ENV in str(values)}
    assert found, f"no variable reads {DB_PASSWORD_ENV}: the scan is broken"
    while True:
        more = {name for name, values in definitions.items() if name not in found and _references(values) & found}
        if not more:
            return found
        found |= more


def _task_file_closure(path: Path, role_tasks: Path | None, seen: set[Path]) -> None:
    """path and every task file and role it includes (recursively) into seen."""
    if path in seen:
        return
    assert path.is_file(), f"{path} is included but does not exist"
    seen.add(path)

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in INCLUDE_TASKS:
                    name = value.get("file") if isinstance(value, dict) else value
                    base = role_tasks if role_tasks is not None else path.parent
                    if "{{" in name:  # e.g. plan_{{ scale_backend_mode }}.yml: every file it may name
                        matches = sorted(base.glob(re.sub(r"{{.*?}}", "*", name)))
                        assert matches, f"{path}: no file matches the include {name}"
                    else:
                        matches = [base / name]
                    for match in matches:
                        _task_file_closure(match.resolve(), role_tasks, seen)
                elif key in INCLUDE_ROLE:
                    _role_closure(value["name"], value.get("tasks_from"), seen)
                elif key == "roles" and isinstance(value, list):
                    for role in value:
                        _role_closure(role if isinstance(role, str) else role.get("role") or role["name"], None, seen)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(path.read_text()))


def _role_closure(role: str, tasks_from: str | None, seen: set[Path]) -> None:
    tasks = ROOT / "roles" / role.split(".")[-1] / "tasks"
    entry = tasks_from or "main"
    _task_file_closure(tasks / (entry if entry.endswith((".yml", ".yaml")) else f"{entry}.yml"), tasks, seen)


def playbooks_reading_the_database() -> set[str]:
    """Every runbook whose plays, task files or roles (as far as it includes them) refer to a variable
    that carries the database password."""
    secret = database_password_variables()
    readers = set()
    for runbook in api.list_runbooks(ROOT):
        files: set[Path] = set()
        _task_file_closure(runbook.path.resolve(), None, files)
        if any(_references(yaml.safe_load(f.read_text())) & secret for f in files):
            readers.add(f"playbooks/{runbook.path.name}")
    return readers


def test_the_database_reader_scan_sees_direct_and_indirect_reads():
    secret = database_password_variables()
    assert {"saasodoo_db_password", "restore_backup_login_password", "collect_logs_redact_values"} <= secret
    readers = playbooks_reading_the_database()
    assert "playbooks/platform_down.yml" in readers  # a task's login_password
    assert "playbooks/data_loss.yml" in readers  # restore_backup (tasks_from: inspect) and its defaults
    assert "playbooks/backend_crashloop.yml" in readers  # through tasks/backend_crashloop/diagnose.yml
    assert "playbooks/dns_resolution.yml" not in readers


def test_the_database_credential_is_on_exactly_the_templates_whose_playbook_reads_the_database():
    readers = playbooks_reading_the_database()
    for template in TEMPLATES:
        has = DB_CREDENTIAL in template["credentials"]
        if template["playbook"] in readers:
            assert has, f"{template['name']}: {template['playbook']} reads the database password; without " \
                        f"the {DB_CREDENTIAL} credential it would use the inventory's test bed default"
        else:
            assert not has, f"{template['name']}: {template['playbook']} does not read the database password"


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


def readme_credentials() -> dict[str, dict]:
    """The controller_credentials example of awx/README.md, by name."""
    readme = (AWX / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "controller_credentials" in data:
            return {c["name"]: c for c in data["controller_credentials"]}
    raise AssertionError("awx/README.md shows no controller_credentials example")


def test_kubernetes_credential_is_awx_builtin_bearer_token_and_injects_what_kubernetes_core_reads():
    for ctype in CREDENTIAL_TYPES:
        for section in ("env", "extra_vars"):
            assert not any(str(k).startswith("K8S_AUTH_") for k in ctype["injectors"].get(section) or {}), \
                f"{ctype['name']}: the Kubernetes connection comes from AWX's built-in type"
    credential = readme_credentials()[K8S_CREDENTIAL]
    assert credential["credential_type"] == BUILTIN_K8S_TYPE
    assert set(credential["inputs"]) <= BUILTIN_K8S_FIELDS
    assert {"host", "bearer_token", "ssl_ca_cert"} <= set(credential["inputs"]), "give the CA: see below"
    assert credential["inputs"].get("verify_ssl", True) is True
    env = awx_kubernetes_bearer_token_env({k: "sample" if isinstance(v, str) else v
                                           for k, v in credential["inputs"].items()})
    assert set(env) == {"K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "K8S_AUTH_VERIFY_SSL", "K8S_AUTH_SSL_CA_CERT"}
    assert env["K8S_AUTH_VERIFY_SSL"] == "True"
    assert set(env) <= _kubernetes_core_env_names(), "kubernetes.core would not read these"
    assert set(env) <= _project_module_env_names(), "the project's modules would not read these"
    # Without a CA the built-in type turns verification off (awx/README.md says so).
    assert awx_kubernetes_bearer_token_env({"host": "h", "bearer_token": "t", "verify_ssl": True}) == \
        {"K8S_AUTH_HOST": "h", "K8S_AUTH_API_KEY": "t", "K8S_AUTH_VERIFY_SSL": "False"}


@pytest.mark.parametrize("ctype", CREDENTIAL_TYPES, ids=lambda c: c["name"])
def test_credential_type_injectors_render_to_real_values_through_the_loader_and_awx(ctype):
    raw = ctype["injectors"]
    # Ansible must leave them alone when the dispatch role loads the file: no plain {{ or {%.
    for section in ("env", "file", "extra_vars"):
        for value in (raw.get(section) or {}).values():
            assert "{{" not in value and "{%" not in value, f"{value!r}: Ansible would render it at load time"
    inputs = sample_inputs(ctype)
    env = awx_render_env(ctype, loader_injectors(raw), inputs)
    assert env, f"{ctype['name']} injects nothing"
    samples = {str(v) for v in inputs.values()}
    for name, value in env.items():
        assert not re.search(r"[{}%]", value), f"{name} reaches the job as {value!r}"
        assert value in samples, f"{name} = {value!r} is not one of the credential's inputs"


@pytest.mark.parametrize("ctype", CREDENTIAL_TYPES, ids=lambda c: c["name"])
def test_credential_type_secret_fields(ctype):
    for field in ctype["inputs"]["fields"]:
        if re.search(r"password|token|secret|key", field["id"]):
            assert field.get("secret") is True, f"{field['id']} must be secret"


def test_database_credential_injects_what_the_inventory_reads():
    ctype = next(c for c in CREDENTIAL_TYPES if c["name"] == DB_CREDENTIAL_TYPE)
    env = awx_render_env(ctype, loader_injectors(ctype["injectors"]), {"password": "s3cret"})
    assert env == {DB_PASSWORD_ENV: "s3cret"}
    database = (ROOT / "inventories" / "local" / "group_vars" / "all" / "database.yml").read_text()
    assert f"'{DB_PASSWORD_ENV}'" in database, f"the inventory does not read {DB_PASSWORD_ENV}"
    assert readme_credentials()[DB_CREDENTIAL]["credential_type"] == DB_CREDENTIAL_TYPE


def test_job_templates_use_credentials_the_readme_shows_how_to_create():
    credentials = readme_credentials()
    for template in TEMPLATES:
        for credential in template["credentials"]:
            assert credential in credentials, f"awx/README.md must show how to create {credential}"


# ------------------------------------------------------------------------------- loading it

def test_requirements_pin_the_loader_and_awx_collection_exactly():
    pins = {c["name"]: c["version"] for c in load("requirements.yml")["collections"]}
    assert set(pins) == {"infra.aap_configuration", "awx.awx"}
    for name, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(version)), f"{name}: pin an exact version, not {version!r}"


def test_configure_playbook_loads_every_file_through_dispatch_with_auth_from_the_environment():
    text = (AWX / "configure.yml").read_text()
    plays = yaml.safe_load(text)
    assert len(plays) == 1 and plays[0]["hosts"] == "localhost"
    loaded = {name for name in CONFIG_FILES if name in text}
    assert loaded == set(CONFIG_FILES), f"configure.yml does not load {set(CONFIG_FILES) - loaded}"
    assert "infra.aap_configuration.dispatch" in text
    for env in ("CONTROLLER_HOST", "CONTROLLER_OAUTH_TOKEN", "CONTROLLER_USERNAME", "CONTROLLER_PASSWORD"):
        assert f"'{env}'" in text, f"configure.yml does not read {env}"


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
