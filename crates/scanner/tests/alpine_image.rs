//! Alpine images: apk's `installed` database read from an image's layers and
//! matched against OSV `Alpine:v3.x` advisories by origin package, in apk's
//! version ordering (where `_rc1` is older than the release, which dpkg's
//! ordering would get wrong).

mod common;

use common::{file, layer, write_oci_layout};
use runtime::image::import::Source;
use scanner::index::{self, LayerCache};
use scanner::matcher::{self, FindingState};
use scanner::packages::PackageKind;
use scanner::severity::Severity;
use scanner::vulndb::VulnDb;

const INSTALLED: &str = "\
C:Q1aaaaaaaaaaaaaaaaaaaaaaaaaaaa=
P:musl
V:1.2.5-r0
A:x86_64
o:musl

C:Q1bbbbbbbbbbbbbbbbbbbbbbbbbbbb=
P:libcrypto3
V:3.3.1-r3
A:x86_64
o:openssl

C:Q1cccccccccccccccccccccccccccc=
P:libssl3
V:3.3.1-r3
A:x86_64
o:openssl

C:Q1dddddddddddddddddddddddddddd=
P:busybox
V:1.36.1_rc1-r0
A:x86_64
o:busybox

C:Q1eeeeeeeeeeeeeeeeeeeeeeeeeeee=
P:zlib
V:1.3.1-r1
A:x86_64
o:zlib
";

const CRITICAL_VECTOR: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H";

fn osv(id: &str, ecosystem: &str, package: &str, events: serde_json::Value) -> String {
    let mut advisory = serde_json::json!({
        "id": id,
        "modified": "2026-01-01T00:00:00Z",
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": package},
            "ranges": [{"type": "ECOSYSTEM", "events": events}],
        }],
    });
    // Two advisories carry a CVSS vector: one alone, one beside the
    // distribution's own (lower) rating.
    if id == "CVE-2024-0001" || id == "CVE-2024-0004" {
        advisory["severity"] = serde_json::json!([{"type": "CVSS_V3", "score": CRITICAL_VECTOR}]);
    }
    if id == "CVE-2024-0004" {
        advisory["affected"][0]["ecosystem_specific"] = serde_json::json!({"severity": "low"});
    }
    advisory.to_string()
}

#[test]
fn alpine_packages_match_by_origin_in_apk_order() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    write_oci_layout(
        &layout,
        "latest",
        &[layer(&[
            file(
                "etc/os-release",
                "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n",
            ),
            file("lib/apk/db/installed", INSTALLED),
        ])],
    );
    let data_dir = work.path().join("data");
    let source_text = format!("oci:{}:latest", layout.display());
    let source = Source::parse(&source_text).unwrap();
    let image =
        index::index_image_source(&source_text, &source, &LayerCache::open(&data_dir)).unwrap();
    assert_eq!(image.packages.len(), 5);
    assert!(
        image
            .packages
            .iter()
            .all(|p| p.installed.kind == PackageKind::Apk)
    );

    let db = VulnDb::open(&data_dir).unwrap();
    let advisories = [
        // openssl: fixed in a later revision; both binaries are affected.
        osv(
            "CVE-2024-0001",
            "Alpine:v3.20",
            "openssl",
            serde_json::json!([{"introduced": "0"}, {"fixed": "3.3.1-r4"}]),
        ),
        // Fixed in an earlier revision: not affected.
        osv(
            "CVE-2024-0002",
            "Alpine:v3.20",
            "openssl",
            serde_json::json!([{"introduced": "0"}, {"fixed": "3.3.1-r2"}]),
        ),
        // busybox 1.36.1_rc1 is older than 1.36.1 in apk's order.
        osv(
            "CVE-2024-0003",
            "Alpine:v3.20",
            "busybox",
            serde_json::json!([{"introduced": "0"}, {"fixed": "1.36.1-r0"}]),
        ),
        // A patch release is newer than the release.
        osv(
            "CVE-2024-0004",
            "Alpine:v3.20",
            "zlib",
            serde_json::json!([{"introduced": "0"}, {"fixed": "1.3.1_p1-r0"}]),
        ),
        // Another release's advisory does not apply.
        osv(
            "CVE-2024-0005",
            "Alpine:v3.19",
            "musl",
            serde_json::json!([{"introduced": "0"}, {"fixed": "9.9-r0"}]),
        ),
    ];
    for (advisory_idx, text) in advisories.iter().enumerate() {
        let path = work.path().join(format!("advisory-{advisory_idx}.json"));
        std::fs::write(&path, text).unwrap();
        db.import_file(&path).unwrap();
    }
    let report = matcher::match_image(&image, &db).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.releases, vec!["alpine:3.20".to_string()]);
    let found: Vec<(&str, &str, Option<&str>)> = report
        .findings
        .iter()
        .map(|f| {
            assert_eq!(f.state, FindingState::Fixed);
            assert_eq!(f.package_kind, PackageKind::Apk);
            (
                f.package.as_str(),
                f.vulnerability.as_str(),
                f.fixed_version.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("busybox", "CVE-2024-0003", Some("1.36.1-r0")),
            ("libcrypto3", "CVE-2024-0001", Some("3.3.1-r4")),
            ("libssl3", "CVE-2024-0001", Some("3.3.1-r4")),
            ("zlib", "CVE-2024-0004", Some("1.3.1_p1-r0")),
        ]
    );
    assert_eq!(report.n_not_affected, 2);
    // Severity: the distribution's rating when it gives one, else the CVSS
    // score's; the two kept apart.
    let severities: Vec<(&str, Severity, Severity, Option<f32>)> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.package.as_str(),
                f.severity,
                f.distribution_severity,
                f.cvss.as_ref().map(|cvss| cvss.base_score),
            )
        })
        .collect();
    assert_eq!(
        severities,
        vec![
            ("busybox", Severity::Unknown, Severity::Unknown, None),
            (
                "libcrypto3",
                Severity::Critical,
                Severity::Unknown,
                Some(9.8)
            ),
            ("libssl3", Severity::Critical, Severity::Unknown, Some(9.8)),
            ("zlib", Severity::Low, Severity::Low, Some(9.8)),
        ]
    );
    let table = scanner::report::findings_table(&image, &report);
    assert!(
        table
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == [
                    "libssl3",
                    "3.3.1-r3",
                    "3.3.1-r4",
                    "CVE-2024-0001",
                    "critical",
                    "9.8",
                    image.layers[0].short()
                ]),
        "{table}"
    );

    // A malformed vector fails its file's import.
    let bad = work.path().join("bad-vector.json");
    std::fs::write(
        &bad,
        serde_json::json!({
            "id": "CVE-2024-0009", "modified": "2026-01-01T00:00:00Z",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:Q"}],
            "affected": [{"package": {"ecosystem": "Alpine:v3.20", "name": "zlib"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}],
        })
        .to_string(),
    )
    .unwrap();
    let error = db.import_file(&bad).unwrap_err().to_string();
    assert!(error.contains("CVE-2024-0009: CVSS vector"), "{error}");
    let actions = scanner::report::update_actions(&report);
    let openssl = actions
        .iter()
        .find(|action| action.source_name == "openssl")
        .unwrap();
    assert_eq!(openssl.upgrade_to, "3.3.1-r4");
    assert_eq!(openssl.packages, vec!["libcrypto3", "libssl3"]);
}
