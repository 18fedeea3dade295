//! The scan policy over a real content store: an image with a vulnerable
//! Debian package is refused at or above the advisory's severity and
//! allowed below it; a verdict is kept per image until the vulnerability
//! data changes, so a container in a restart loop is not rescanned.

mod common;

use common::{file, layer, write_oci_layout};
use runtime::image::import::Source;
use runtime::image::store::Store;
use scanner::policy::{PolicyError, ScanPolicy, Verdict};
use scanner::severity::Severity;
use scanner::vulndb::VulnDb;

const STATUS: &str = "\
Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo (1.0-1)
Version: 1.0-1+b1

Package: bar
Status: install ok installed
Architecture: all
Version: 2.0-1
";

fn osv(id: &str, package: &str, fixed: &str, urgency: &str) -> String {
    serde_json::json!({
        "id": id,
        "modified": "2026-01-01T00:00:00Z",
        "affected": [{
            "package": {"ecosystem": "Debian:12", "name": package},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            "ecosystem_specific": {"urgency": urgency},
        }],
    })
    .to_string()
}

#[test]
fn the_policy_refuses_at_its_severity_and_keeps_verdicts_per_image_and_data() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let layout = work.path().join("layout");
    write_oci_layout(
        &layout,
        "latest",
        &[layer(&[
            file(
                "etc/os-release",
                "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
            ),
            file("var/lib/dpkg/status", STATUS),
        ])],
    );
    let store = Store::open(&data_dir).unwrap();
    let source = Source::parse(&format!("oci:{}", layout.display())).unwrap();
    let (_, digest) = runtime::image::import::import(&store, &source, None).unwrap();
    let reference = digest.to_string();

    let high = ScanPolicy::new(&data_dir, Severity::High);
    // No data: refused, with a message that says what to do.
    let error = high.check(&store, &reference, "app:1").unwrap_err();
    assert!(matches!(error, PolicyError::NoData { .. }), "{error}");
    assert!(error.to_string().contains("shoal vulndb import"), "{error}");

    let advisories = work.path().join("foo.json");
    std::fs::write(&advisories, osv("DSA-9001-1", "foo", "1.0-2", "high")).unwrap();
    VulnDb::open(&data_dir)
        .unwrap()
        .import_file(&advisories)
        .unwrap();
    let Verdict::Refused(refusal) = high.check(&store, &reference, "app:1").unwrap() else {
        panic!("a high finding passed a policy that refuses high");
    };
    assert_eq!(
        refusal.to_string(),
        "image app:1 has 1 vulnerability at or above high severity: DSA-9001-1 in libfoo1 1.0-1+b1 (high, fixed in 1.0-2)"
    );
    assert_eq!(refusal.manifest_digest, digest);
    // Checked again (a restart loop, another pod, another name for the same
    // image): the kept verdict, under the name asked with.
    for _ in 0..5 {
        let Verdict::Refused(again) = high.check(&store, &reference, "other:2").unwrap() else {
            panic!("the kept verdict changed");
        };
        assert!(again.to_string().starts_with("image other:2 has 1 "));
    }
    assert_eq!(high.n_scans(), 1);

    let critical = ScanPolicy::new(&data_dir, Severity::Critical);
    assert_eq!(
        critical.check(&store, &reference, "app:1").unwrap(),
        Verdict::Allowed {
            n_findings: 1,
            warnings: Vec::new()
        }
    );

    // New data: the image is scanned again and the new finding counts.
    let more = work.path().join("bar.json");
    std::fs::write(&more, osv("DSA-9002-1", "bar", "2.0-2", "critical")).unwrap();
    VulnDb::open(&data_dir).unwrap().import_file(&more).unwrap();
    let Verdict::Refused(refusal) = critical.check(&store, &reference, "app:1").unwrap() else {
        panic!("the critical finding from the new data passed");
    };
    assert_eq!(refusal.worst[0].vulnerability, "DSA-9002-1");
    assert_eq!(critical.n_scans(), 2);

    // An image the store does not have is an error naming it.
    let missing = high.check(&store, "nosuch:1", "nosuch:1").unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("cannot scan image nosuch:1: "),
        "{missing}"
    );
}
