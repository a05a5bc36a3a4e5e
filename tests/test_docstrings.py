"""Every public name of bert4x has a docstring and is rendered in the API reference (docs/api).

Public names of a module: its `__all__` when it defines one, else the classes and functions
defined in it (not imported) whose names do not start with `_`. The API reference is the set
of `::: module` mkdocstrings directives in docs/api/*.md; a directive renders the module's
public names unless its options say `members: false` or list the members to render.
"""

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import yaml

import bert4x

API_DIR = Path(__file__).resolve().parents[1] / "docs" / "api"

# Keras hooks that subclasses override with the behaviour Keras documents for them.
KERAS_OVERRIDES = frozenset(
    {
        "build",
        "call",
        "compute_mask",
        "compute_output_shape",
        "compute_output_spec",
        "get_config",
        "from_config",
        "update_step",
    }
)


def public_modules():
    """bert4x and every module below it whose dotted path has no `_`-prefixed part."""
    names = ["bert4x"]
    for info in pkgutil.walk_packages(bert4x.__path__, "bert4x."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return [importlib.import_module(name) for name in names]


def bindings(module):
    """{name: has an attribute docstring} of the names a module's own source binds at top level.

    def/class statements count as documented here (their docstring is checked at run time);
    an assignment is documented by a string literal on the next statement, the form
    mkdocstrings renders.
    """
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    found = {}
    for node, following in zip(tree.body, tree.body[1:] + [None]):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = True
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            documented = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = documented
    return found


def public_names(module):
    """`__all__`, else the bert4x classes and functions bound in the module's own source."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name in bindings(module)
        if not name.startswith("_")
        and (inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name)))
        and getattr(module, name).__module__.startswith("bert4x")
    ]


def public_objects(module):
    """(name, object) of the public classes and functions of `module`."""
    pairs = [(name, getattr(module, name)) for name in public_names(module)]
    return [(n, v) for n, v in pairs if inspect.isclass(v) or inspect.isfunction(v)]


def method_doc(cls, name):
    """The method's docstring, or that of the bert4x base-class method it overrides."""
    for base in cls.__mro__:
        if name in vars(base) and base.__module__.startswith("bert4x"):
            member = vars(base)[name]
            function = getattr(member, "__func__", getattr(member, "fget", member))
            if getattr(function, "__doc__", None):
                return function.__doc__
    return None


def undocumented(module):
    """Qualified names of public classes, functions and methods without a docstring."""
    missing = []
    assigned = bindings(module)
    for name, value in public_objects(module):
        if not assigned.get(name, True):
            missing.append(f"{module.__name__}.{name} (assignment without a docstring below it)")
        elif not (value.__doc__ or "").strip():
            missing.append(f"{module.__name__}.{name}")
        if not inspect.isclass(value) or not value.__module__.startswith("bert4x"):
            continue
        for attr, member in vars(value).items():
            if attr.startswith("_") or attr in KERAS_OVERRIDES:
                continue
            if callable(member) or isinstance(member, (property, classmethod, staticmethod)):
                if not (method_doc(value, attr) or "").strip():
                    missing.append(f"{module.__name__}.{name}.{attr}")
    return missing


def api_directives(api_dir=API_DIR):
    """{module name: members it renders, or None for all public members} from docs/api."""
    directives = {}
    for page in sorted(Path(api_dir).glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^:::\s+(\S+)\s*$", line)
            if not match:
                continue
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                block.append(following)
            options = (yaml.safe_load("\n".join(block)) or {}).get("options") or {}
            members = options.get("members")
            directives[match.group(1)] = None if members in (None, True) else list(members or [])
    return directives


def test_every_public_name_has_a_docstring():
    missing = [name for module in public_modules() for name in undocumented(module)]
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(missing)


def test_exempt_keras_overrides_are_really_keras_hooks():
    # The exemption covers names a Keras base class defines, nothing of our own.
    import keras

    for name in KERAS_OVERRIDES:
        assert hasattr(keras.layers.Layer, name) or hasattr(keras.optimizers.Optimizer, name), name


def test_every_public_module_and_name_is_in_the_api_reference():
    directives = api_directives()
    rendered = set()  # ids of the objects some directive renders
    for module_name, members in directives.items():
        module = importlib.import_module(module_name)  # a directive naming no module fails here
        for name, value in public_objects(module):
            if members is None or name in members:
                rendered.add(id(value))
    problems = []
    for module in public_modules():
        if module.__name__ not in directives:
            problems.append(f"module {module.__name__} has no '::: {module.__name__}' in docs/api")
        for name, value in public_objects(module):
            if id(value) not in rendered:
                problems.append(f"{module.__name__}.{name} is rendered by no directive")
    assert not problems, "API reference gaps:\n  " + "\n  ".join(problems)


def test_directive_parser_sees_member_restrictions(tmp_path):
    # The coverage test is only as good as its reading of the directive options.
    (tmp_path / "x.md").write_text(
        "# x\n\n::: bert4x.models\n    options:\n      members: false\n\n"
        "::: bert4x.backend\n    options:\n      members:\n        - gelu_erf\n\n"
        "::: bert4x.layers\n",
        encoding="utf-8",
    )
    assert api_directives(tmp_path) == {
        "bert4x.models": [],
        "bert4x.backend": ["gelu_erf"],
        "bert4x.layers": None,
    }


def test_public_names_skip_reimports():
    import bert4x.layers

    names = public_names(bert4x.layers)
    assert "MultiHeadAttention" in names and "iterative_pinv" in names
    # imported from bert4x.backend, so documented there and not here
    assert "apply_rotary" not in names and "padding_mask" not in names


def test_undocumented_names_are_found(tmp_path):
    # A module with one gap of each kind: the walk must report exactly these.
    source = (
        "import keras\n\n"
        "class Documented(keras.layers.Layer):\n"
        '    """y = x."""\n\n'
        "    def call(self, x):\n"
        "        return x\n\n"
        "    def helper(self):\n"
        "        return 1\n\n"
        "def bare():\n"
        "    return 1\n\n"
        "def _private():\n"
        "    return 1\n\n"
        "def documented():\n"
        '    """1."""\n\n'
        "Alias = documented\n"
        "Described = documented\n"
        '"""The same function under a second name."""\n'
    )
    path = tmp_path / "bert4x_docstring_probe.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("bert4x_docstring_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(undocumented(module)) == [
        "bert4x_docstring_probe.Alias (assignment without a docstring below it)",
        "bert4x_docstring_probe.Documented.helper",
        "bert4x_docstring_probe.bare",
    ]
