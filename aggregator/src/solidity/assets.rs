//! The page's files: the bundle built from aggregator/web/solidity (embedded,
//! checked in), solc's soljson and OpenZeppelin's sources from the installed
//! npm folder. A Content-Security-Policy keeps every request on this origin.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

use super::SolidityError;
use crate::ingest::error;
use crate::state::App;

const INDEX: &str = include_str!("../../web/solidity/src/index.html");
const STYLE: &str = include_str!("../../web/solidity/src/style.css");
const SCRIPT: &str = include_str!("../../web/solidity/dist/app.js");
const WORKER: &str = include_str!("../../web/solidity/dist/worker.js");

/// Only this origin; WebAssembly compiled from soljson; CodeMirror's
/// injected styles.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
                   style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
                   connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'";

/// The library the page may import: the OpenZeppelin npm package.
const LIBRARY: &str = "@openzeppelin/contracts";

fn with_type(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    with_type("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    with_type("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn worker() -> Response {
    with_type("text/javascript; charset=utf-8", WORKER)
}

pub async fn style() -> Response {
    with_type("text/css; charset=utf-8", STYLE)
}

/// Checks the npm folder at startup: solc's soljson and the library are
/// there. Returns solc's version.
pub fn check(dir: &Path) -> Result<String, SolidityError> {
    let fail = |reason: String| SolidityError::Assets {
        path: dir.display().to_string(),
        reason,
    };
    let soljson = dir.join("solc/soljson.js");
    if !soljson.is_file() {
        return Err(fail(format!("no {}", soljson.display())));
    }
    let library = dir.join(LIBRARY).join("package.json");
    if !library.is_file() {
        return Err(fail(format!("no {}", library.display())));
    }
    let package = dir.join("solc/package.json");
    let text = std::fs::read_to_string(&package)
        .map_err(|e| fail(format!("{}: {e}", package.display())))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", package.display())))?;
    value["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| fail(format!("{}: no version", package.display())))
}

pub async fn soljson(State(app): State<Arc<App>>) -> Response {
    let Some(dir) = &app.solidity.assets else {
        return error(
            StatusCode::NOT_FOUND,
            "no compiler installed: start the aggregator with --solidity-assets",
        );
    };
    match tokio::fs::read(dir.join("solc/soljson.js")).await {
        Ok(bytes) => {
            let mut r = with_type("text/javascript; charset=utf-8", bytes);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("public, max-age=3600"),
            );
            r
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("soljson.js: {e}"),
        ),
    }
}

/// The file of the library at `path` (as written in an import), if it names
/// a Solidity source inside the library's folder.
pub fn library_file(dir: &Path, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix(LIBRARY)?.strip_prefix('/')?;
    if !rest.ends_with(".sol") || rest.len() > 300 {
        return None;
    }
    let relative = Path::new(rest);
    let plain = relative.components().all(|c| match c {
        Component::Normal(part) => part.to_str().is_some_and(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }),
        _ => false,
    });
    plain.then(|| dir.join(LIBRARY).join(relative))
}

pub async fn library(State(app): State<Arc<App>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(dir) = &app.solidity.assets else {
        return error(
            StatusCode::NOT_FOUND,
            "no library installed: start the aggregator with --solidity-assets",
        );
    };
    let Some(file) = library_file(dir, &path) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{path:?} is not a Solidity source of {LIBRARY}"),
        );
    };
    match tokio::fs::read_to_string(&file).await {
        Ok(text) => with_type("text/plain; charset=utf-8", text),
        Err(_) => error(
            StatusCode::NOT_FOUND,
            format!("{path:?}: no such file in {LIBRARY}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_library_sources_are_served() {
        let dir = Path::new("/n");
        assert_eq!(
            library_file(dir, "@openzeppelin/contracts/token/ERC20/ERC20.sol"),
            Some(PathBuf::from(
                "/n/@openzeppelin/contracts/token/ERC20/ERC20.sol"
            ))
        );
        for bad in [
            "@openzeppelin/contracts/../../solc/package.json",
            "@openzeppelin/contracts/token/../../../x.sol",
            "@openzeppelin/contracts//etc/passwd.sol",
            "@openzeppelin/contracts/package.json",
            "@openzeppelin/contractsX/a.sol",
            "solc/soljson.sol",
            "/etc/x.sol",
            "@openzeppelin/contracts/a b.sol",
        ] {
            assert_eq!(library_file(dir, bad), None, "{bad}");
        }
    }
}
