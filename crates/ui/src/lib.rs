//! shoal's web dashboard: a static page, embedded in the binary, that the
//! API server serves under `/ui/` without authentication. The page asks the
//! user for a bearer token and then calls the Kubernetes API itself with it,
//! so what it shows is what the API lets that user see. It depends on
//! nothing, so that changing the page rebuilds only this crate and the
//! binary.

/// One embedded file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");
const APP_JS: &[u8] = include_bytes!("../assets/app.js");
const STYLE_CSS: &[u8] = include_bytes!("../assets/style.css");

/// The file at `path` under `/ui/` (`""` is the page itself), if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, bytes) = match path {
        "" | "index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return None,
    };
    Some(Asset {
        content_type,
        bytes,
    })
}

/// The Content-Security-Policy the page is served with: its own scripts,
/// styles and API only, nothing inline, no frames. Names from the cluster
/// are inserted as text, never as markup; this policy is the second line of
/// defence if that ever slips.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_and_nothing_else() {
        let page = asset("").expect("the page");
        assert_eq!(page, asset("index.html").expect("the page by name"));
        assert!(page.content_type.starts_with("text/html"));
        let html = std::str::from_utf8(page.bytes).expect("utf-8");
        assert!(html.contains("src=\"app.js\""), "{html}");
        assert!(html.contains("href=\"style.css\""), "{html}");
        assert!(
            asset("app.js")
                .unwrap()
                .content_type
                .starts_with("text/javascript")
        );
        assert!(
            asset("style.css")
                .unwrap()
                .content_type
                .starts_with("text/css")
        );
        for missing in ["../Cargo.toml", "api/store", "app.js/", "x"] {
            assert_eq!(asset(missing), None, "{missing}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_has_no_inline_script() {
        for name in ["", "app.js", "style.css"] {
            let text = std::str::from_utf8(asset(name).unwrap().bytes).unwrap();
            assert!(!text.contains("http://"), "{name} names an http URL");
            assert!(!text.contains("https://"), "{name} names an https URL");
            // Cluster data is inserted with textContent, never as markup.
            assert!(!text.contains("innerHTML"), "{name} uses innerHTML");
        }
        let html = std::str::from_utf8(asset("").unwrap().bytes).unwrap();
        assert!(!html.contains("<script>"), "inline script in the page");
        assert!(!html.contains("style=\""), "inline style in the page");
    }
}
