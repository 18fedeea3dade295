#!/usr/bin/env python3
"""Vendors upstream Kubernetes schemas into crates/kubepb.

Usage:
    tools/vendor_upstream.py UPSTREAM_DIR

UPSTREAM_DIR holds source trees of three upstream repositories, all at the
same release tag (v0.36.3 for the files now in the crate):

    UPSTREAM_DIR/api                      kubernetes/api
    UPSTREAM_DIR/apimachinery             kubernetes/apimachinery
    UPSTREAM_DIR/apiextensions-apiserver  kubernetes/apiextensions-apiserver

It does two things:

1. Copies each group's `generated.proto` unchanged (license header included)
   to `proto/k8s.io/<repo>/<path>/generated.proto`, which is the path the
   protos import each other by.
2. Writes `src/go_fields.txt`: what the .proto files do not say but the Go
   JSON encoding depends on, read from the Go struct tags in the same trees.
   For each struct field with a `protobuf:` tag it records the proto field
   number, the JSON name, and whether the Go field is a pointer, has
   `omitempty`, or is `inline`. It also lists the kinds (structs embedding
   TypeMeta) per apiVersion and the Go named slice types (`type Verbs []string`)
   that go-to-protobuf wraps in a message with one `items` field.

The parser is deliberately simple: it reads `type X struct { ... }` blocks
line by line, which is how every API types file upstream is written.
"""

import os
import re
import sys

# (repo, package dir inside the repo). The proto package is the Go import path
# with '/' as '.' and '-' as '_'.
PACKAGES = [
    ("api", "core/v1"),
    ("api", "apps/v1"),
    ("api", "batch/v1"),
    ("api", "coordination/v1"),
    ("api", "discovery/v1"),
    ("api", "policy/v1"),
    ("api", "events/v1"),
    ("api", "autoscaling/v1"),
    ("api", "autoscaling/v2"),
    ("api", "rbac/v1"),
    ("api", "networking/v1"),
    ("api", "authentication/v1"),
    ("api", "authorization/v1"),
    ("api", "scheduling/v1"),
    ("api", "storage/v1"),
    ("api", "certificates/v1"),
    ("api", "admissionregistration/v1"),
    ("api", "node/v1"),
    ("api", "flowcontrol/v1"),
    ("apimachinery", "pkg/apis/meta/v1"),
    ("apimachinery", "pkg/runtime"),
    ("apimachinery", "pkg/runtime/schema"),
    ("apimachinery", "pkg/util/intstr"),
    ("apimachinery", "pkg/api/resource"),
    ("apiextensions-apiserver", "pkg/apis/apiextensions/v1"),
]

FIELD = re.compile(r'^\s*(?:(\w+)\s+)?([^\s`]+)\s*`([^`]*)`')
TAG = re.compile(r'(\w+):"([^"]*)"')
STRUCT_START = re.compile(r'^type (\w+) struct \{\s*$')
SLICE_TYPE = re.compile(r'^type (\w+) \[\]\w[\w.]*\s*(//.*)?$')
GROUP_NAME = re.compile(r'^const GroupName = "([^"]*)"')


def go_files(directory):
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        if name.startswith("zz_generated") or name == "generated.pb.go":
            continue
        yield os.path.join(directory, name)


def parse_package(directory):
    """Returns (structs, slice_types, group_name) for one Go package."""
    structs = {}
    slice_types = []
    group_name = None
    for path in go_files(directory):
        with open(path, encoding="utf-8") as source:
            lines = source.read().splitlines()
        current = None
        depth = 0
        for line in lines:
            if current is None:
                if m := STRUCT_START.match(line):
                    current = m.group(1)
                    structs[current] = {"fields": [], "kind": False}
                    depth = 1
                elif m := SLICE_TYPE.match(line):
                    slice_types.append(m.group(1))
                elif m := GROUP_NAME.match(line):
                    group_name = m.group(1)
                continue
            stripped = line.strip()
            if stripped.startswith("//"):
                continue
            depth += stripped.count("{") - stripped.count("}")
            if depth <= 0:
                current = None
                continue
            if depth > 1:
                # A field of anonymous struct type; none carries a protobuf tag upstream.
                continue
            if stripped in ("metav1.TypeMeta `json:\",inline\"`", "TypeMeta `json:\",inline\"`"):
                structs[current]["kind"] = True
                continue
            m = FIELD.match(line)
            if not m:
                continue
            go_name, go_type, tag_text = m.groups()
            tags = dict(TAG.findall(tag_text))
            if tags.get("protobuf", "-") == "-":
                continue
            number = int(tags["protobuf"].split(",")[1])
            json_parts = tags.get("json", "").split(",")
            json_name = json_parts[0]
            flags = set(json_parts[1:])
            if go_name is None and json_name == "":
                flags.add("inline")
            if json_name == "":
                json_name = go_name or go_type.split(".")[-1]
            if json_name == "-":
                flags.add("skip")
            if go_type.startswith("*"):
                flags.add("ptr")
            kept = sorted(flags & {"ptr", "omitempty", "inline", "skip"})
            structs[current]["fields"].append((number, json_name, kept))
    return structs, slice_types, group_name


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    upstream = sys.argv[1]
    crate = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = [
        "# Generated by tools/vendor_upstream.py from the Go types of kubernetes/api,",
        "# kubernetes/apimachinery and kubernetes/apiextensions-apiserver; do not edit.",
        "# kind <apiVersion> <Kind> <message>",
        "# slice <message>            (Go named slice type: JSON is the `items` list)",
        "# field <message> <number> <json name> [flags: ptr omitempty inline skip]",
    ]
    for repo, package in PACKAGES:
        directory = os.path.join(upstream, repo, package)
        proto_src = os.path.join(directory, "generated.proto")
        proto_dst = os.path.join(crate, "proto", "k8s.io", repo, package, "generated.proto")
        os.makedirs(os.path.dirname(proto_dst), exist_ok=True)
        with open(proto_src, "rb") as src, open(proto_dst, "wb") as dst:
            proto_bytes = src.read()
            dst.write(proto_bytes)
        messages = set(re.findall(rb"^message (\w+) \{", proto_bytes, re.M))
        proto_package = ("k8s.io/" + repo + "/" + package).replace("/", ".").replace("-", "_")
        structs, slice_types, group_name = parse_package(directory)
        version = package.rsplit("/", 1)[-1]
        for name in sorted(structs):
            if name.encode() not in messages:
                continue
            full = proto_package + "." + name
            info = structs[name]
            if info["kind"] and group_name is not None and repo != "apimachinery":
                api_version = f"{group_name}/{version}" if group_name else version
                out.append(f"kind {api_version} {name} {full}")
            for number, json_name, flags in info["fields"]:
                out.append(" ".join(["field", full, str(number), json_name] + flags))
        for name in sorted(slice_types):
            if name.encode() in messages:
                out.append(f"slice {proto_package}.{name}")
    with open(os.path.join(crate, "src", "go_fields.txt"), "w", encoding="utf-8") as table:
        table.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
