//! The no-op fleet converge benchmark behind bench/fleet-noop (ignored in
//! the normal test run): wall time of `kiln fleet converge` when nothing
//! changes, for 1, 8 and 32 hosts and several --parallel values, with warm
//! ssh master connections (ControlPersist) and cold ones.

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore]
fn bench_fleet_noop() {
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
        "{:>6} {:>9} {:>10} {:>10}",
        "hosts", "parallel", "warm", "cold"
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
        std::fs::write(&path, inv).unwrap();
        for p in [1usize, 4, 8, 16, 32] {
            if p > n {
                continue;
            }
            let mut warm = Vec::new();
            let mut cold = Vec::new();
            for _ in 0..runs {
                for (cold_run, out) in [(true, &mut cold), (false, &mut warm)] {
                    if cold_run {
                        f.close_masters();
                    }
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
                        .arg(&path)
                        .run()
                        .success();
                    out.push(t.elapsed().as_secs_f64());
                    assert!(o.stdout.contains("\"unchanged\": ".to_string().as_str()));
                }
            }
            let (w, c) = (median(warm), median(cold));
            if n == 1 {
                one = Some((w, c));
            }
            let (w1, c1) = one.unwrap();
            println!(
                "{n:>6} {p:>9} {w:>10.3} {c:>10.3}   ({:.2}x / {:.2}x of one host)",
                w / w1,
                c / c1
            );
        }
    }
}
