"""Writes google_names.json: bert4keras 0.11.5's own Google checkpoint-name tables.

bert4keras' `variable_mapping()` methods ({keras layer name: [checkpoint names]}) are
the reference for the names a Google / bert4keras checkpoint holds. This script reads
them from bert4keras' published source at generation time (nothing of bert4keras is
copied into this repository) and evaluates them for small configs without TensorFlow
or Keras 2: it parses `bert4keras/models.py` with `ast`, keeps every class with only
its `variable_mapping` method (and the class hierarchy, so `super()` chains work), pulls
in the module-level helpers those methods call (`string_matching` from
`bert4keras/snippets.py`), and runs each method on a bare instance carrying only the
attributes the methods read (num_hidden_layers, and version for T5).

A dev tool, not run by the tests; it needs network access to PyPI unless given the
package. From the repository root:

    python tests/data/golden/make_google_names.py            # pip-downloads 0.11.5
    pip download --no-deps bert4keras==0.11.5 -d /tmp/b4k
    python tests/data/golden/make_google_names.py /tmp/b4k/bert4keras-0.11.5.tar.gz

The argument may be the sdist (.tar.gz), the wheel (.whl), or an unpacked source
folder (one holding bert4keras/models.py, or the bert4keras package folder itself).
"""

import argparse
import ast
import builtins
import copy
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

VERSION = "0.11.5"
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "google_names.json")
NUM_HIDDEN_LAYERS = 2

# family -> (bert4keras class in models.py, attributes the instance carries besides
# num_hidden_layers). bert4keras' build_transformer_model sets T5's version from the
# model name ("t5.1.0" keeps the default, "t5.1.1" and "mt5.1.1" pass version=...).
# T5_Encoder and T5_Decoder inherit T5_Base.variable_mapping unchanged, so T5's parts
# have no tables of their own: the tests check them against their T5 family's table.
FAMILIES = {
    "bert": ("BERT", {}),
    "albert": ("ALBERT", {}),
    "albert_unshared": ("ALBERT_Unshared", {}),
    "nezha": ("NEZHA", {}),
    "roformer": ("RoFormer", {}),
    "roformer_v2": ("RoFormerV2", {}),
    "electra": ("ELECTRA", {}),
    "gpt": ("GPT", {}),
    "gpt2": ("GPT2", {}),
    "gpt2_ml": ("GPT2_ML", {}),
    "t5.1.0": ("T5", {"version": "t5.1.0"}),
    "t5.1.1": ("T5", {"version": "t5.1.1"}),
    "mt5.1.1": ("T5", {"version": "mt5.1.1"}),
}


# ------------------------------------------------------------------ the source
def _download(directory):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            f"bert4keras=={VERSION}",
            "-d",
            directory,
        ],
        check=True,
    )
    found = glob.glob(os.path.join(directory, "bert4keras-*"))
    if len(found) != 1:
        raise SystemExit(f"expected one downloaded bert4keras package in {directory}: {found}")
    return found[0]


def _package_dir(path, scratch):
    """The folder holding bert4keras' models.py and snippets.py, unpacking if needed."""
    if os.path.isdir(path):
        for candidate in (path, os.path.join(path, "bert4keras")):
            if os.path.isfile(os.path.join(candidate, "models.py")):
                return candidate
        found = glob.glob(os.path.join(path, "*", "bert4keras", "models.py"))
        if len(found) == 1:
            return os.path.dirname(found[0])
        raise SystemExit(f"no bert4keras/models.py under {path}")
    target = os.path.join(scratch, "unpacked")
    if path.endswith((".tar.gz", ".tgz")):
        # The "data" filter (refusing links and paths out of target) where Python has it.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(path) as archive:
            archive.extractall(target, **safe)
    elif path.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)
    else:
        raise SystemExit(f"not a bert4keras sdist, wheel or folder: {path}")
    return _package_dir(target, scratch)


def _check_version(package):
    """The version bert4keras declares (its __init__.py), which must be VERSION."""
    with open(os.path.join(package, "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            version = ast.literal_eval(node.value)
            if version != VERSION:
                raise SystemExit(f"bert4keras {version} found; this script pins {VERSION}")
            return version
    raise SystemExit("bert4keras/__init__.py declares no __version__")


# ------------------------------------------------------------ the mapping code
def _parse(package, module):
    with open(os.path.join(package, module), encoding="utf-8") as f:
        return ast.parse(f.read(), filename=module)


def _free_names(functions):
    """Names the functions read but never bind: globals (a close enough over-estimate)."""
    loaded, bound = set(), set()
    for function in functions:
        bound.update(a.arg for a in function.args.args)
        for node in ast.walk(function):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
    return loaded - bound


def _mapping_namespace(package):
    """bert4keras' model classes reduced to their variable_mapping methods, executed."""
    models = _parse(package, "models.py")
    snippets = _parse(package, "snippets.py")
    classes = {node.name: node for node in models.body if isinstance(node, ast.ClassDef)}
    helpers = {node.name: node for node in snippets.body if isinstance(node, ast.FunctionDef)}

    body, methods = [], []
    for name, node in classes.items():
        mapping = [
            item
            for item in node.body
            if isinstance(item, ast.FunctionDef) and item.name == "variable_mapping"
        ]
        if any(item.decorator_list for item in mapping):
            raise SystemExit(f"{name}.variable_mapping is decorated; this script cannot run it")
        for base in node.bases:
            if not (isinstance(base, ast.Name) and (base.id in classes or base.id == "object")):
                raise SystemExit(f"{name} has a base this script does not know: {ast.dump(base)}")
        methods.extend(mapping)
        reduced = copy.copy(node)
        reduced.body = mapping or [ast.Pass()]
        reduced.decorator_list = []
        reduced.keywords = []
        body.append(reduced)

    # Helpers the methods call: module-level functions from snippets.py only (the
    # methods are plain data building; anything else would need TensorFlow).
    needed = _free_names(methods) - set(classes) - set(dir(builtins)) - {"self", "super"}
    missing = sorted(needed - set(helpers))
    if missing:
        raise SystemExit(f"variable_mapping uses names this script cannot provide: {missing}")
    extra = [helpers[name] for name in sorted(needed)]

    # string_matching needs `re`; a helper needing more fails below with a NameError.
    imports = [ast.Import(names=[ast.alias(name="re")])]
    module = ast.Module(body=[*imports, *extra, *body], type_ignores=[])
    ast.fix_missing_locations(module)
    namespace = {"__name__": "bert4keras_variable_mappings"}
    exec(compile(module, "bert4keras/models.py (variable_mapping only)", "exec"), namespace)
    return namespace


def _tables(namespace):
    tables = {}
    for family, (class_name, attributes) in FAMILIES.items():
        cls = namespace[class_name]
        builder = cls.__new__(cls)  # no __init__: only what variable_mapping reads
        builder.num_hidden_layers = NUM_HIDDEN_LAYERS
        for key, value in attributes.items():
            setattr(builder, key, value)
        mapping = builder.variable_mapping()
        tables[family] = {layer: list(names) for layer, names in sorted(mapping.items())}
    return tables


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "package",
        nargs="?",
        help=f"bert4keras {VERSION} sdist, wheel or source folder (default: pip download it)",
    )
    parser.add_argument("-o", "--output", default=OUTPUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        source = args.package or _download(scratch)
        package = _package_dir(os.path.abspath(source), scratch)
        version = _check_version(package)
        tables = _tables(_mapping_namespace(package))
    out = {
        "_header": {
            "bert4keras_version": version,
            "generated_by": "tests/data/golden/make_google_names.py",
            "num_hidden_layers": NUM_HIDDEN_LAYERS,
            "source": "bert4keras/models.py: each family's class variable_mapping()",
            "classes": {family: cls for family, (cls, _) in FAMILIES.items()},
        },
        **tables,
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.output}: {len(tables)} families from bert4keras {version}")


if __name__ == "__main__":
    main()
