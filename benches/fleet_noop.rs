//! The no-op fleet converge benchmark behind bench/fleet-noop (a bench
//! target, `cargo bench --bench fleet_noop`): wall time of `kiln fleet converge` when nothing
//! changes, for 1, 8 and 32 hosts and several --parallel values, with warm
//! ssh master connections (ControlPersist) and cold ones.

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::Instant;

use support::fleet::{Fleet, spec};
use support::*;

fn policy() -> Repo {
    let mut recipe = String::new();
    for i in 0..20 {
        recipe.push_str(&format!(
            "[[resource]]\nfile = \"/etc/kiln-bench/f{i}.conf\"\ncontent = \"setting {i} on {{{{node.fqdn}}}}\\n\"\nmode = \"0644\"\n\n"
        ));
    }
    recipe = format!(
        "[[resource]]\ndirectory = \"/etc/kiln-bench\"\n\n{recipe}[[verify]]\nfile = \"/etc/kiln-bench/f0.conf\"\ncontains = \"setting 0\"\n"
    );
    Repo::new()
        .role("bench", "run_list = [\"recipe[bench]\"]")
        .recipe("bench", "default", &recipe)
}

/// User + system CPU seconds of this process's waited-for children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let total: usize = std::env::var("KILN_BENCH_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let t = Instant::now();
    let mut f = Fleet::new(
        (0..total)
            .map(|i| spec(&format!("h{:02}.bench.example.com", i + 1), &["bench"]))
            .collect(),
        |_| {},
    );
    f.start();
    eprintln!("{total} hosts up in {:.1}s", t.elapsed().as_secs_f64());
    let repo = policy();
    let t = Instant::now();
    f.kiln(&["converge", "--parallel", "32"])
        .repo(&repo)
        .run()
        .success();
    eprintln!(
        "first converge (kiln and bundle sent to each) in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let base = std::fs::read_to_string(f.inventory()).unwrap();
    let (head, _) = base.split_once("\n[hosts.").unwrap();
    let sizes: Vec<usize> = [1, 8, 32].into_iter().filter(|&n| n <= total).collect();
    println!("\nno-op fleet converge, {total}-host test fleet, median of {runs} runs (seconds)");
    println!(
        "{:>6} {:>9} {:>10} {:>10} {:>12} {:>14}",
        "hosts", "parallel", "warm", "cold", "cold-x25519", "ctl-cpu/host"
    );
    let mut one = None;
    for &n in &sizes {
        let mut inv = head.to_string();
        for h in &f.hosts[..n] {
            inv.push_str(&format!(
                "\n[hosts.\"{}\"]\naddress = \"{}\"\nroles = [\"bench\"]\n",
                h.fqdn, h.address
            ));
        }
        let path = f.dir.path().join(format!("inventory-{n}.toml"));
        std::fs::write(&path, &inv).unwrap();
        // The same hosts with classic key exchange: OpenSSH 9's default
        // sntrup761x25519 costs more CPU per handshake.
        let x25519 = f.dir.path().join(format!("inventory-{n}-x25519.toml"));
        std::fs::write(
            &x25519,
            inv.replacen(
                "\n[defaults]",
                "\nssh_options = [\"KexAlgorithms=curve25519-sha256\"]\n\n[defaults]",
                1,
            ),
        )
        .unwrap();
        for p in [1usize, 4, 8, 16, 32] {
            if p > n {
                continue;
            }
            let mut warm = Vec::new();
            let mut cold = Vec::new();
            let mut cold_x = Vec::new();
            // CPU the controller (kiln and its ssh clients) spent per host on
            // a warm run: what remains when the hosts do their own work.
            let mut ctl = Vec::new();
            for _ in 0..runs {
                for (cold_run, inv, out) in [
                    (true, &x25519, &mut cold_x),
                    (true, &path, &mut cold),
                    (false, &path, &mut warm),
                ] {
                    if cold_run {
                        f.close_masters();
                    }
                    let cpu0 = children_cpu();
                    let t = Instant::now();
                    let o = kiln()
                        .env("KILN_SSH_CONTROL_DIR", f.dir.path().join("ctl"))
                        .env("KILN_FLEET_BINARY", support::fleet::kiln_binary())
                        .repo(&repo)
                        .args([
                            "fleet",
                            "converge",
                            "--json",
                            "--parallel",
                            &p.to_string(),
                            "--inventory",
                        ])
                        .arg(inv)
                        .run()
                        .success();
                    out.push(t.elapsed().as_secs_f64());
                    if !cold_run {
                        ctl.push((children_cpu() - cpu0) / n as f64);
                    }
                    assert!(o.stdout.contains("\"unchanged\": ".to_string().as_str()));
                }
            }
            let (w, c, x) = (median(warm), median(cold), median(cold_x));
            if n == 1 {
                one = Some((w, c, x));
            }
            let (w1, c1, x1) = one.unwrap();
            println!(
                "{n:>6} {p:>9} {w:>10.3} {c:>10.3} {x:>12.3} {:>12.1}ms   ({:.2}x / {:.2}x / {:.2}x of one host)",
                median(ctl) * 1000.0,
                w / w1,
                c / c1,
                x / x1
            );
        }
    }
}
