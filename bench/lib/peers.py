#!/usr/bin/env python3
"""Writes the devvm role as Ansible, Puppet and pyinfra see it (used by
bench/devvm-peers, not run alone).

The resources are the ones kiln's why-run plan lists (type and name, guard,
actions), in its order; what each holds (content, mode, owner, versions,
uids, link targets) is read from the tree kiln converged, which is what
the policy says. Shell guards are taken from the recipe line the report's
origin names.

    peers.py PLAN_JSON TREE OUT_DIR IN_TREE_DIR

OUT_DIR is where the files go on the host; IN_TREE_DIR is the same
directory as a program inside the tree sees it (Ansible and Puppet run
there; pyinfra runs on the host and reaches in with chroot).
"""

import grp
import json
import os
import pwd
import re
import stat
import subprocess
import sys
import tomllib

plan_path, tree, out, inside = sys.argv[1:5]
report = json.load(open(plan_path))
origins = {r["resource"]: r.get("origin", "") for r in report["resources"]}
# A sensitive resource's name is hidden: its path is among these, in order.
sensitive = list(report.get("sensitive_paths", []))


def t(path):
    return os.path.join(tree, path.lstrip("/"))


def passwd(file):
    rows = {}
    for line in open(t(file)):
        f = line.rstrip("\n").split(":")
        rows[f[0]] = f
    return rows


users, groups = passwd("/etc/passwd"), passwd("/etc/group")
gid_name = {int(f[2]): n for n, f in groups.items()}
uid_name = {int(f[2]): n for n, f in users.items()}


def installed(name):
    return subprocess.run(
        ["chroot", tree, "dpkg-query", "-W", "-f", "${Version}", name],
        capture_output=True, text=True, check=True).stdout


def recipe_entry(origin):
    """The [[resource]] table of a recipe that the origin's line is in."""
    m = re.search(r"\((.+):(\d+)\)$", origin)
    if not m:
        return {}
    lines = open(m.group(1)).read().splitlines()
    index = sum(1 for l in lines[: int(m.group(2))] if l.strip() == "[[resource]]") - 1
    return tomllib.load(open(m.group(1), "rb"))["resource"][index]


def guard_of(entry):
    """(kind, value): a shell only_if, a built-in path/mounted test, or None."""
    g = entry.get("only_if")
    if g is None:
        return None
    if isinstance(g, str):
        if "{{" in g:
            sys.exit(f"peers.py: a templated guard is not handled: {g}")
        return ("shell", g)
    if "path" in g and g.get("type") == "directory":
        return ("directory", g["path"])
    sys.exit(f"peers.py: a guard the peers do not translate: {g}")


def attrs(path):
    st = os.lstat(t(path))
    return {
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "owner": uid_name[st.st_uid],
        "group": gid_name[st.st_gid],
    }


os.makedirs(os.path.join(out, "files"), exist_ok=True)
ans, pp, py = [], [], []
skipped, counts = [], {}
# The app's `not_if = { mounted = "{{apache2.docroot}}" }`, rendered as the
# devvm role has it (the plan does not carry guards' values).
docroot = "/var/www/shop"
nfile = 0


def rc_links(service):
    """The start links that enable a SysV service in runlevels 2-5."""
    out = []
    for level in "2345":
        d = f"/etc/rc{level}.d"
        out += [f"{d}/{n}" for n in sorted(os.listdir(t(d)))
                if re.fullmatch(r"S\d\d" + re.escape(service), n)]
    return out


def q(s):
    return json.dumps(s)


def when(expr):
    """An Ansible condition, evaluated where ansible-playbook runs (the tree)."""
    return "\n  when: " + q(expr)


def add(task, pres, pyop, cond=None):
    """One resource for each tool; `cond` (Ansible's, Puppet's and pyinfra's
    form of one condition) guards it."""
    if cond is None:
        ans.append(task)
        pp.append(pres)
        py.append(pyop)
        return
    a, p, y = cond
    ans.append(task + when(a))
    pp.append(f"if {p} {{ {pres} }}")
    py.append(f"if {y}:\n    " + pyop.replace("\n", "\n    "))


def not_mounted(path):
    return (f"not ('{path}' is mount)", f"!$facts.dig('mountpoints', {q(path)})", f"{q(path)} not in mounts")


def is_dir(path):
    return (f"'{path}' is directory", f"find_file({q(path)})", f"host.get_fact(Directory, path={q(path)})")


for step in report["plan"]["steps"]:
    res = step["resource"]
    kind, name = re.match(r"(\w+)\[(.*)\]$", res).groups()
    actions = [a["action"] for a in step["actions"]]
    entry = recipe_entry(origins.get(res, ""))
    if name.startswith("sensitive #") and kind in ("file", "template"):
        name = sensitive.pop(0)
    guard = guard_of(entry)
    cond = None
    if isinstance(entry.get("not_if"), dict) and "mounted" in entry["not_if"]:
        m = entry["not_if"]["mounted"]
        cond = not_mounted(docroot if "{{" in m else m)
    counts[kind] = counts.get(kind, 0) + 1
    if kind == "package":
        v = installed(name)
        ans.append(f"- apt: {{ name: {q(name + '=' + v)}, state: present }}")
        pp.append(f"package {{ {q(name)}: ensure => {q(v)} }}")
        py.append(f"apt.packages(packages=[{q(name + '=' + v)}])")
    elif kind == "group":
        gid = groups[name][2]
        ans.append(f"- group: {{ name: {q(name)}, gid: {gid} }}")
        pp.append(f"group {{ {q(name)}: ensure => present, gid => {gid} }}")
        py.append(f"server.group(group={q(name)}, gid={gid})")
    elif kind == "user":
        f = users[name]
        g = gid_name[int(f[3])]
        ans.append(f"- user: {{ name: {q(name)}, uid: {f[2]}, group: {q(g)}, home: {q(f[5])}, "
                   f"shell: {q(f[6])}, comment: {q(f[4])} }}")
        pp.append(f"user {{ {q(name)}: ensure => present, uid => {f[2]}, gid => {q(g)}, home => {q(f[5])}, "
                  f"shell => {q(f[6])}, comment => {q(f[4])} }}")
        py.append(f"server.user(user={q(name)}, uid={f[2]}, group={q(g)}, home={q(f[5])}, "
                  f"shell={q(f[6])}, comment={q(f[4])}, create_home=True)")
    elif kind in ("file", "template"):
        nfile += 1
        src = os.path.join("files", str(nfile))
        with open(t(name), "rb") as i, open(os.path.join(out, src), "wb") as o:
            o.write(i.read())
        a = attrs(name)
        task = (f"- copy: {{ src: {q(os.path.join(inside, src))}, dest: {q(name)}, mode: {q(a['mode'])}, "
                f"owner: {q(a['owner'])}, group: {q(a['group'])} }}")
        pres = (f"file {{ {q(name)}: ensure => file, content => file({q(os.path.join(inside, src))}), "
                f"mode => {q(a['mode'])}, owner => {q(a['owner'])}, group => {q(a['group'])} }}")
        pyop = (f"files.put(src={q(os.path.join(out, src))}, dest={q(name)}, mode={q(a['mode'])}, "
                f"user={q(a['owner'])}, group={q(a['group'])})")
        add(task, pres, pyop, cond)
    elif kind == "directory":
        a = attrs(name)
        task = (f"- file: {{ path: {q(name)}, state: directory, mode: {q(a['mode'])}, "
                f"owner: {q(a['owner'])}, group: {q(a['group'])} }}")
        pres = (f"file {{ {q(name)}: ensure => directory, mode => {q(a['mode'])}, "
                f"owner => {q(a['owner'])}, group => {q(a['group'])} }}")
        pyop = (f"files.directory(path={q(name)}, mode={q(a['mode'])}, user={q(a['owner'])}, "
                f"group={q(a['group'])})")
        add(task, pres, pyop, cond)
    elif kind == "link" and actions == ["delete"]:
        ans.append(f"- file: {{ path: {q(name)}, state: absent }}")
        pp.append(f"file {{ {q(name)}: ensure => absent }}")
        py.append(f"files.link(path={q(name)}, present=False)")
    elif kind == "link":
        to = os.readlink(t(name))
        ans.append(f"- file: {{ src: {q(to)}, dest: {q(name)}, state: link, force: true, follow: false }}")
        pp.append(f"file {{ {q(name)}: ensure => link, target => {q(to)} }}")
        py.append(f"files.link(path={q(name)}, target={q(to)})")
    elif kind == "service":
        # Enabled only: nothing is started in a tree (kiln skips the start).
        task = f"- service: {{ name: {q(name)}, enabled: true }}"
        pres = f"service {{ {q(name)}: enable => true }}"
        # pyinfra's sysvinit.enable writes unpadded priorities (S1name), so
        # it checks the start links of runlevels 2-5 themselves.
        pyop = "\n".join(
            f"files.link(path={q(link)}, target={q(os.readlink(t(link)))})"
            for link in rc_links(name)) or "pass"
        add(task, pres, pyop, is_dir(guard[1]) if guard and guard[0] == "directory" else cond)
    elif kind == "execute" and actions == ["nothing"]:
        counts[kind] -= 1
        skipped.append(res)
    elif kind == "execute" and guard and guard[0] == "shell":
        # The guard is all there is to check: it is false in a tree.
        cmd = entry["command"]
        label = f"g{len(ans)}"
        ans.append(f"- command: {q(guard[1])}\n  register: {label}\n  failed_when: false\n  changed_when: false")
        ans.append(f"- shell: {q('exit 1')}\n  when: {label}.rc == 0")
        pp.append(f"exec {{ {q(res)}: command => {q('/bin/false')}, onlyif => {q(guard[1])}, "
                  f"provider => shell }}")
        py.append(f"if host.get_fact(Command, {q(guard[1] + ' >/dev/null 2>&1 && echo yes || echo no')}) == 'yes':\n"
                  f"    server.shell(commands=[{q('exit 1')}])")
        del cmd
    elif kind.startswith("mariadb_"):
        # Over the server's socket, as kiln does: none in a tree, so skipped.
        sock = "/run/mysqld/mysqld.sock"
        add(f"- shell: {q('exit 1')}", f"exec {{ {q(res)}: command => {q('/bin/false')} }}",
            f"server.shell(commands=[{q('exit 1')}])",
            (f"'{sock}' is exists", f"find_file({q(sock)})", f"host.get_fact(File, path={q(sock)})"))
    else:
        sys.exit(f"peers.py: no peer form for {res} ({actions}, guard {guard})")

with open(os.path.join(out, "site.yml"), "w") as f:
    f.write("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n")
    for task in ans:
        f.write("    " + task.replace("\n", "\n    ") + "\n")
with open(os.path.join(out, "site.pp"), "w") as f:
    f.write("\n".join(pp) + "\n")
with open(os.path.join(out, "deploy.py"), "w") as f:
    f.write("from pyinfra import host\n"
            "from pyinfra.facts.files import Directory, File\n"
            "from pyinfra.facts.server import Command, Mounts\n"
            "from pyinfra.operations import apt, files, server, sysvinit\n"
            "mounts = host.get_fact(Mounts)\n")
    f.write("\n".join(py) + "\n")
print(" ".join(f"{n} {k}" for k, n in counts.items()))
if skipped:
    print("left out (action nothing, checked by no tool): " + " ".join(skipped))
