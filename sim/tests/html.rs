//! The HTML page in a real headless Chromium: it renders, and every chart holds its series (the
//! page's own script measures each drawn line once laid out and writes it on `<body>`).
//! Chromium comes from Debian's `chromium` package (the test command installs it); without it this
//! test fails when `TC_REQUIRE_CHROMIUM=1`, and is skipped with a message otherwise.

use std::process::Command;
use std::time::Duration;

use traffic_control_sim::{config_from, simulate, spec};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The page's charts as the browser measured them.
fn rendered(html: &str, name: &str) -> serde_json::Value {
    let Some(browser) = chromium() else {
        assert!(std::env::var("TC_REQUIRE_CHROMIUM").is_err(), "TC_REQUIRE_CHROMIUM=1 but no chromium on PATH");
        eprintln!("skipped: no chromium on PATH");
        return serde_json::Value::Null;
    };
    let dir = std::env::temp_dir().join(format!("traffic-control-sim-html-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    std::fs::write(&page, html).unwrap();
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--window-size=1200,900"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8(out.stdout).unwrap();
    let start = dom.find("data-rendered=\"").expect("the page's script ran and wrote data-rendered") + 15;
    let end = start + dom[start..].find('"').unwrap();
    let json = dom[start..end].replace("&quot;", "\"").replace("&amp;", "&");
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&json).unwrap()
}

#[test]
fn the_page_renders_its_charts_with_every_series() {
    let mut workload = spec::workload_from("backmarket", None).unwrap();
    workload.duration = Duration::from_secs(180);
    let server = spec::server_from("backmarket", None).unwrap();
    let sim = simulate(vec![config_from("backmarket", None, &[]).unwrap()], &workload, Some(&server)).unwrap();
    let html = sim.html("what if");
    let charts = rendered(&html, "one");
    if charts.is_null() {
        return;
    }
    let charts = charts.as_array().unwrap();
    let names: Vec<&str> = charts.iter().map(|c| c["chart"].as_str().unwrap()).collect();
    assert_eq!(names, ["utilisation", "queue", "waits"]);
    let (report, series) = &sim.runs[0];
    let util = &charts[0]["series"];
    let limits: Vec<&str> = util.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(limits, series.limits.iter().map(String::as_str).collect::<Vec<_>>());
    for chart in charts {
        assert!(chart["width"].as_f64().unwrap() > 300.0, "{chart}");
        for s in chart["series"].as_array().unwrap() {
            assert!(s["points"].as_u64().unwrap() >= 2, "{s}");
            assert!(s["length"].as_f64().unwrap() > 0.0, "a drawn line: {s}");
        }
    }
    // One point per sample in the time charts; every priority that went has its wait curve.
    assert_eq!(util[0]["points"].as_u64().unwrap() as usize, series.t.len());
    assert_eq!(charts[2]["series"].as_array().unwrap().len(), report.priorities.len());
}

#[test]
fn a_comparison_draws_both_runs_and_a_budget_chart() {
    let workload = spec::workload_from("keepa", None).unwrap();
    let server = spec::server_from("keepa", None).unwrap();
    let a = config_from("keepa", None, &[]).unwrap();
    let b = config_from("keepa", None, &[("KEEPA_RATE_LIMIT_TOKENS_REFILL".into(), "30".into())]).unwrap();
    let sim = simulate(vec![a, b], &workload, Some(&server)).unwrap();
    let charts = rendered(&sim.html("compare"), "two");
    if charts.is_null() {
        return;
    }
    let runs: Vec<&str> = charts.as_array().unwrap().iter().map(|c| c["run"].as_str().unwrap()).collect();
    assert!(runs.contains(&"keepa") && runs.contains(&"keepa KEEPA_RATE_LIMIT_TOKENS_REFILL=30"), "{runs:?}");
    let budgets = charts.as_array().unwrap().iter().filter(|c| c["chart"] == "budget").count();
    assert_eq!(budgets, 2);
}
