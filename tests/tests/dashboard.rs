//! The dashboard in a real browser: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver, fantoccini) against a host with real failed messages and
//! plugin deployments. An operator signs in, sees each queue's handled/min and the hosts,
//! the flow charts of the last hour (per queue and plugin, and call times),
//! filters the failed messages by error, retries all matching (confirming the count) and
//! sees none left, sees new failures come in without reloading (but not while messages are
//! selected), opens a detail with its payload hidden until asked and the version of each
//! attempt, rolls a plugin back; a bookmark opens its page and Back returns to the page
//! before; readiness says a host without a broker does not use one; a read token sees no
//! button that changes something; the
//! overview fits a phone's width. Held keys: a reader sees which message holds a key and
//! how many wait (a key written as markup shows as text), an operator skips it and the
//! key's next message runs. A screenshot of each page is kept under
//! the test's output directory (`target/tmp/dashboard/`).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;
use wharf_host::dispatch::report;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::browser::{
    self, Driver, click, confirm, present, screenshot, session, table_rows, wait_text,
};
use wharf_tests::held::holding;
use wharf_tests::http::{OPERATE, READ, get, serve};
use wharf_tests::{Backend, Host, plugin_wasm, wait_for};

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(base).await.unwrap();
    let field = client
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    field.send_keys(token).await.unwrap();
    click(client, "#login-form button").await;
    wait_text(client, "#who", "(").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_through_the_dashboard_and_a_reader_only_looks() {
    // First: an install takes minutes, and the hosts' reports below count for 20 s.
    browser::ensure_installed();
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&screenshots).unwrap();
    let host = Host::start(
        Backend::Sqlite,
        &["fixture-always-reject", "fixture-panic", "fixture-noop"],
    )
    .await;
    let base = serve(&host).await;
    for _ in 0..4 {
        host.publish("test", "test.noop", json!({})).await;
    }
    for i in 0..3 {
        host.publish("test", "test.reject", json!({ "order": i }))
            .await;
    }
    for i in 0..2 {
        host.publish(
            "test",
            "test.panic",
            json!({ "order": i, "secret": "hidden-payload" }),
        )
        .await;
    }
    host.drain().await;
    let serving = report::serving("dashboard-host/1", &host.dispatcher);
    let handled = host.dispatcher.throughput().last_minute();
    host.store
        .report_host("dashboard-host/1", &serving, &handled)
        .await
        .unwrap();
    report::report_flow(&*host.store, &host.dispatcher, "dashboard-host/1")
        .await
        .unwrap();
    for version in ["fixture-versioned-v1", "fixture-versioned-v2"] {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/plugins"))
            .bearer_auth(OPERATE)
            .body(std::fs::read(plugin_wasm(version)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let client = session(&driver, profile.path()).await;
    sign_in(&client, &base, OPERATE).await;
    wait_text(&client, "#who", "ops (operate)").await;
    wait_text(&client, "#readiness", "Ready").await;
    wait_text(&client, "#readiness", "broker: not used").await;
    wait_text(&client, "#page table", "test").await;
    wait_text(&client, "#hosts", "dashboard-host/1").await;
    let queues = table_rows(&client, "#queues table").await;
    let test = queues.iter().find(|q| q["Queue"] == "test").unwrap();
    assert_eq!(test["Handled/min"], "4", "{queues:?}");
    screenshot(&client, &screenshots, "overview").await;

    // Flow: a chart per queue and per plugin of the last hour, and the plugins' call times.
    click(&client, r#"#nav a[data-page="flow"]"#).await;
    wait_text(&client, "#flow-queues", "inbox test: 4 handled").await;
    let queue = r#"figure[data-chart="queue:inbox:test"]"#;
    wait_text(&client, queue, "5 dead in 60 min").await;
    wait_text(
        &client,
        r#"figure[data-chart="plugin:noop"]"#,
        "noop: 4 handled",
    )
    .await;
    wait_text(
        &client,
        r#"figure[data-chart="calls:noop"]"#,
        "noop calls: 4",
    )
    .await;
    let drawn = client
        .execute(
            "const q = document.querySelector(arguments[0]);
             return [q.querySelector('path.s-handled').getAttribute('d'),
                     q.querySelectorAll('rect.minute').length,
                     q.querySelector('rect.minute:last-of-type title').textContent];",
            vec![json!(queue)],
        )
        .await
        .unwrap();
    let handled_line = drawn[0].as_str().unwrap();
    assert!(
        handled_line.starts_with('M') && handled_line.matches('L').count() == 59,
        "one point per minute of the hour: {drawn}"
    );
    assert_eq!(drawn[1], 60, "one tooltip per minute: {drawn}");
    assert!(
        drawn[2].as_str().unwrap().contains("handled "),
        "a minute's tooltip names its values: {drawn}"
    );
    let marks = client
        .execute(
            r#"const f = document.querySelector('figure[data-chart="calls:noop"]');
               return f.querySelectorAll('circle.s-mean').length
                   + (f.querySelector('path.s-mean').getAttribute('d').includes('L') ? 1 : 0);"#,
            vec![],
        )
        .await
        .unwrap();
    assert!(
        marks.as_u64().unwrap() >= 1,
        "the mean call time is drawn, as a dot where a minute stands alone"
    );
    screenshot(&client, &screenshots, "flow").await;

    // Failed messages: filter by error, retry all matching, none left.
    click(&client, r#"#nav a[data-page="failed"]"#).await;
    wait_text(&client, "#failed-total", "5 matching").await;
    let error = client
        .find(Locator::Css(r#"#filters input[name="error"]"#))
        .await
        .unwrap();
    error.send_keys("panicked").await.unwrap();
    let status = client
        .find(Locator::Css(r#"#filters input[name="status"]"#))
        .await
        .unwrap();
    status.send_keys("failed").await.unwrap();
    click(&client, "#filters button").await;
    wait_text(&client, "#failed-total", "2 matching").await;
    screenshot(&client, &screenshots, "failed").await;
    click(&client, "#retry-all").await;
    assert_eq!(confirm(&client).await, "Retry 2 failed messages?");
    wait_text(&client, "#failed-total", "0 matching").await;
    wait_text(&client, "#bulk-result", "Retried 2.").await;
    assert_eq!(
        host.count("SELECT COUNT(*) FROM failed_messages WHERE status = 'retrying'")
            .await,
        2
    );

    // The list follows new failures without a reload: the two retried fail again, and a
    // third; but not while a message is selected.
    host.publish("test", "test.panic", json!({ "order": 2 }))
        .await;
    host.drain().await;
    wait_text(&client, "#failed-total", "3 matching").await;
    click(&client, r#"#page input[type="checkbox"]"#).await;
    host.publish("test", "test.panic", json!({ "order": 3 }))
        .await;
    host.drain().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_text(&client, "#failed-total", "3 matching").await;
    let checkbox = client
        .find(Locator::Css(r#"#page input[type="checkbox"]"#))
        .await
        .unwrap();
    assert!(
        checkbox.is_selected().await.unwrap(),
        "the selection survives the refresh period"
    );
    checkbox.click().await.unwrap();
    wait_text(&client, "#failed-total", "4 matching").await;

    // A detail: the payload stays hidden until asked for.
    let error = client
        .find(Locator::Css(r#"#filters input[name="error"]"#))
        .await
        .unwrap();
    error.clear().await.unwrap();
    error.send_keys("can never be valid").await.unwrap();
    click(&client, "#filters button").await;
    wait_text(&client, "#failed-total", "3 matching").await;
    click(&client, "#page tbody tr").await;
    let payload = client
        .wait()
        .for_element(Locator::Css("#payload"))
        .await
        .unwrap();
    assert!(
        !payload.is_displayed().await.unwrap(),
        "the payload is hidden at first"
    );
    wait_text(&client, "#page dl", "always-reject").await;
    let attempts = table_rows(&client, "#page table").await;
    assert!(
        !attempts.is_empty()
            && attempts
                .iter()
                .all(|a| a["Version"] == "1.0.0" && a["sha256"].as_str().unwrap().len() == 12),
        "every attempt names the version and hash that ran it: {attempts:?}"
    );
    click(&client, "#show-payload").await;
    assert!(payload.is_displayed().await.unwrap());
    assert!(payload.text().await.unwrap().contains("order"));
    screenshot(&client, &screenshots, "detail").await;

    // Plugins: roll the registry's versioned plugin back to 1.0.0.
    click(&client, r#"#nav a[data-page="plugins"]"#).await;
    click(&client, r#"button[data-rollback="versioned"]"#).await;
    assert!(confirm(&client).await.starts_with("Roll back versioned"));
    wait_text(
        &client,
        "#deploy-result",
        "Rolled back versioned: 2.0.0 -> 1.0.0",
    )
    .await;
    screenshot(&client, &screenshots, "plugins").await;

    // The page follows the URL: a bookmark of the failed messages opens them, Back
    // returns to the page before.
    client.goto(&format!("{base}#failed")).await.unwrap();
    wait_text(&client, "#failed-total", "matching").await;
    click(&client, r#"#nav a[data-page="plugins"]"#).await;
    wait_text(&client, "#page", "Registry").await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("#plugins")
    );
    client.back().await.unwrap();
    wait_text(&client, "#failed-total", "matching").await;
    client.forward().await.unwrap();
    wait_text(&client, "#page", "Registry").await;

    // A reader sees the same pages without a button that changes something.
    click(&client, "#signout").await;
    sign_in(&client, &base, READ).await;
    wait_text(&client, "#who", "viewer (read)").await;
    click(&client, r#"#nav a[data-page="failed"]"#).await;
    wait_text(&client, "#failed-total", "matching").await;
    for css in [
        "#retry-all",
        "#delete-all",
        "#retry-selected",
        r#"#page input[type="checkbox"]"#,
    ] {
        assert!(!present(&client, css).await, "a read token sees no {css}");
    }
    click(&client, "#page tbody tr").await;
    client
        .wait()
        .for_element(Locator::Css("#show-payload"))
        .await
        .unwrap();
    assert!(!present(&client, "#retry-one").await && !present(&client, "#delete-one").await);
    click(&client, r#"#nav a[data-page="plugins"]"#).await;
    wait_text(&client, "#page", "Registry").await;
    assert!(!present(&client, "#deploy").await && !present(&client, "[data-rollback]").await);
    screenshot(&client, &screenshots, "plugins-read-only").await;

    // Phone width.
    client.set_window_size(390, 844).await.unwrap();
    click(&client, r#"#nav a[data-page="overview"]"#).await;
    wait_text(&client, "#page table", "test").await;
    let overflow = client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        json!(true),
        "the page fits a phone's width (tables scroll inside it)"
    );
    screenshot(&client, &screenshots, "overview-phone").await;
    client.close().await.unwrap();
    eprintln!("screenshots in {}", screenshots.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_a_held_key_and_an_operator_skips_it() {
    browser::ensure_installed();
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&screenshots).unwrap();
    let key = "<img src=x onerror=document.title='owned'>";
    let (host, messages) = holding(Backend::Sqlite, key).await;
    let base = serve(&host).await;
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let worker = host.worker.clone();
    tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    wait_for("the key held", Duration::from_secs(20), async || {
        let (_, held) = get(&base, "/api/keys/held", READ).await;
        held["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let client = session(&driver, profile.path()).await;
    sign_in(&client, &base, READ).await;
    click(&client, r#"#nav a[data-page="keys"]"#).await;
    wait_text(&client, "#page table", &messages[1].id.to_string()).await;
    let rows = table_rows(&client, "#page table").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (
            &row["Queue"],
            &row["Key"],
            &row["Plugin"],
            &row["Seq"],
            &row["Waiting"]
        ),
        (
            &json!("test"),
            &json!(key),
            &json!("sequence-a"),
            &json!("2"),
            &json!("1")
        ),
        "{row:?}"
    );
    assert!(
        !present(&client, "#page img").await,
        "the key is shown as text, not markup"
    );
    assert!(
        !present(&client, "[data-skip]").await,
        "a read token sees no Skip"
    );
    screenshot(&client, &screenshots, "held-keys-read-only").await;

    click(&client, "#signout").await;
    sign_in(&client, &base, OPERATE).await;
    click(&client, r#"#nav a[data-page="keys"]"#).await;
    click(&client, "[data-skip]").await;
    let asked = confirm(&client).await;
    assert!(
        asked.contains(key) && asked.contains("The 1 waiting behind it run without it"),
        "{asked}"
    );
    wait_text(&client, "#keys-result", "Skipped key").await;
    wait_text(&client, "#no-held-keys", "No key is held.").await;
    screenshot(&client, &screenshots, "held-keys-skipped").await;
    assert_ne!(
        client.title().await.unwrap(),
        "owned",
        "no markup of the key ran"
    );
    wait_for(
        "the key's third message handled",
        Duration::from_secs(20),
        async || host.count("SELECT COUNT(*) FROM inbox").await == 0,
    )
    .await;
    client.close().await.unwrap();
}
