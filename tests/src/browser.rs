//! The browser the dashboard's test drives: Debian's `chromium` and `chromedriver`,
//! installed with apt-get the first time a test needs them on a machine that has neither
//! (the README's test command works on a fresh machine), once per test process; a
//! headless session through WebDriver (fantoccini) and the few moves the test makes.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// The browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Its WebDriver server.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Make sure both are installed: install Debian's `chromium` and `chromium-driver` when one
/// is missing, printing apt-get's progress; panic saying what to run when that fails.
pub fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(problem) = INSTALLED.get_or_init(install_if_missing) {
        panic!("{problem}");
    }
}

fn missing() -> Vec<&'static str> {
    [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|tool| !Path::new(tool).exists())
        .collect()
}

fn install_if_missing() -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let advice = "install Debian's chromium and chromium-driver as root: apt-get update && apt-get install -y chromium chromium-driver";
    eprintln!(
        "{} missing: installing chromium and chromium-driver with apt-get (once per machine, a few minutes)",
        missing.join(" and ")
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("could not run apt-get ({e}); {advice}"))
            .and_then(|status| {
                status.success().then_some(()).ok_or_else(|| {
                    format!("apt-get {} failed ({status}); {advice}", args.join(" "))
                })
            })
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "chromium", "chromium-driver"])?;
    let still = self::missing();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} still missing after apt-get install; {advice}",
            still.join(" and ")
        ))
    }
}

/// A `chromedriver` on a free port, stopped when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Start one (installing the browser first when it is missing).
    pub fn start() -> Driver {
        ensure_installed();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium session with a fresh profile, `width` x `height`.
pub async fn session(driver: &Driver, profile: &Path) -> Client {
    let options = json!({
        "binary": CHROMIUM,
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
            format!("--user-data-dir={}", profile.display()), "--window-size=1280,900",
        ],
    });
    let capabilities = serde_json::Map::from_iter([("goog:chromeOptions".to_owned(), options)]);
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
        }
    }
}

/// Wait until `css` matches an element whose text contains `text`.
pub async fn wait_text(client: &Client, css: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if found.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never said {text:?} (last: {found:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Accept the confirmation dialog the last click opened; its text.
pub async fn confirm(client: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = client.get_alert_text().await {
            client.accept_alert().await.unwrap();
            return text;
        }
        assert!(Instant::now() < deadline, "no confirmation dialog");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Click the element `css` matches, once it is there.
pub async fn click(client: &Client, css: &str) {
    client
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The cells of each row of the table in `css`, by column title.
pub async fn table_rows(
    client: &Client,
    css: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let script = format!(
        "const t = document.querySelector({css:?}); if (!t) return [];
         const titles = [...t.querySelectorAll('thead th')].map((th) => th.textContent);
         return [...t.querySelectorAll('tbody tr')].map((tr) =>
             Object.fromEntries([...tr.cells].map((td, i) => [titles[i], td.textContent])));"
    );
    let rows = client.execute(&script, vec![]).await.unwrap();
    serde_json::from_value(rows).unwrap()
}

/// Whether `css` matches an element.
pub async fn present(client: &Client, css: &str) -> bool {
    !client.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Keep a screenshot of what the browser shows as `name`.png.
pub async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}
