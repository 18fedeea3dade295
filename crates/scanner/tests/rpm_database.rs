//! RPM databases written by Debian's `rpm` (`rpm --initdb`, then `rpm -i
//! --justdb` of packages built here with `rpmbuild`): the scanner's SQLite
//! and header reader lists exactly what `rpm -qa` lists, including rows
//! spread over interior pages and headers spilling onto overflow pages;
//! an image holding such a database is matched against OSV `Rocky Linux:9`
//! advisories in rpm's ordering; a damaged database is a warning.

mod common;

use std::path::Path;
use std::process::Command;

use common::{file, layer, write_oci_layout};
use runtime::image::import::Source;
use scanner::index::{self, LayerCache};
use scanner::matcher::{self, FindingState};
use scanner::packages::PackageKind;
use scanner::rpmdb::read_sqlite;
use scanner::vulndb::VulnDb;

const N_SUBPACKAGES: usize = 40;

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .expect("the command runs (rpm: scripts/install-deps)");
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Builds one source package with many binary subpackages (each with a long
/// description, so headers overflow a 4 KiB page) and installs them into a
/// fresh database under `work`; returns the database file.
fn make_database(work: &Path) -> std::path::PathBuf {
    let long_description = "A line of description text that makes the header large.\n".repeat(120);
    let mut spec = format!(
        "Name: scanfix\nVersion: 1.2.3\nRelease: 4.el9\nEpoch: 2\nSummary: test\nLicense: MIT\nBuildArch: noarch\n%description\n{long_description}\n%files\n"
    );
    for sub_idx in 0..N_SUBPACKAGES {
        spec.push_str(&format!(
            "%package -n scanlib{sub_idx}\nSummary: sub\nVersion: 0.{sub_idx}~rc1\nRelease: {sub_idx}.el9_3\n%description -n scanlib{sub_idx}\n{long_description}\n%files -n scanlib{sub_idx}\n"
        ));
    }
    let spec_path = work.join("scanfix.spec");
    std::fs::write(&spec_path, spec).unwrap();
    let top = work.join("top");
    run(Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("-bb")
        .arg(&spec_path));
    let db_dir = work.join("db");
    run(Command::new("rpm")
        .arg("--initdb")
        .arg("--dbpath")
        .arg(&db_dir));
    let rpms: Vec<_> = std::fs::read_dir(top.join("RPMS/noarch"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(rpms.len(), N_SUBPACKAGES + 1);
    run(Command::new("rpm")
        .args(["-i", "--justdb", "--nodeps", "--noscripts", "--dbpath"])
        .arg(&db_dir)
        .args(&rpms));
    db_dir.join("rpmdb.sqlite")
}

#[test]
fn an_rpm_database_lists_what_rpm_lists_and_matches_rocky_advisories() {
    let work = tempfile::tempdir().unwrap();
    let database = make_database(work.path());
    let bytes = std::fs::read(&database).unwrap();

    let mut ours: Vec<String> = read_sqlite(&bytes)
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {} {}",
                p.name,
                p.epoch.map_or("(none)".to_string(), |e| e.to_string()),
                p.version,
                p.release,
                p.arch,
                p.source_rpm
            )
        })
        .collect();
    ours.sort();
    let rpm_text = run(Command::new("rpm")
        .args(["-qa", "--dbpath"])
        .arg(database.parent().unwrap())
        .args([
            "--qf",
            "%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\\n",
        ]));
    let mut theirs: Vec<String> = rpm_text.lines().map(str::to_string).collect();
    theirs.sort();
    assert_eq!(ours.len(), N_SUBPACKAGES + 1);
    assert_eq!(ours, theirs);

    // The database in an image, with advisories for it.
    let layout = work.path().join("layout");
    // `common::layer` takes text; the database goes in as raw bytes.
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["etc/", "var/", "var/lib/", "var/lib/rpm/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder.append_data(&mut header, dir, &[][..]).unwrap();
    }
    for (path, contents) in [
        (
            "etc/os-release",
            b"NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"9.3\"\n".to_vec(),
        ),
        ("var/lib/rpm/rpmdb.sqlite", bytes.clone()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, path, &contents[..])
            .unwrap();
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &builder.into_inner().unwrap()).unwrap();
    let base = encoder.finish().unwrap();
    // A second layer damages the database: its packages are not listed,
    // and the scan says so.
    let damaged = layer(&[file("var/lib/rpm/rpmdb.sqlite", "SQLite format 3\0garbage")]);
    write_oci_layout(&layout, "good", std::slice::from_ref(&base));
    let data_dir = work.path().join("data");
    let cache = LayerCache::open(&data_dir);
    let source_text = format!("oci:{}:good", layout.display());
    let image =
        index::index_image_source(&source_text, &Source::parse(&source_text).unwrap(), &cache)
            .unwrap();
    assert!(image.warnings.is_empty(), "{:?}", image.warnings);
    assert_eq!(image.packages.len(), N_SUBPACKAGES + 1);
    assert!(
        image
            .packages
            .iter()
            .all(|p| p.installed.kind == PackageKind::Rpm)
    );
    let scanfix = image
        .packages
        .iter()
        .find(|p| p.installed.name == "scanfix")
        .unwrap();
    assert_eq!(scanfix.installed.version, "2:1.2.3-4.el9");
    let lib7 = image
        .packages
        .iter()
        .find(|p| p.installed.name == "scanlib7")
        .unwrap();
    assert_eq!(lib7.installed.source_name, "scanfix");
    assert_eq!(lib7.installed.version, "2:0.7~rc1-7.el9_3");

    let db = VulnDb::open(&data_dir).unwrap();
    let advisories = [
        // By source name, fixed in a later release of 0.7 (every
        // subpackage built from scanfix is matched; only those older
        // than the fix are affected).
        ("RLSA-2024:0001", "scanfix", "2:0.7-1.el9_3"),
        // By binary name: ~rc1 is older than the release it precedes.
        ("RLSA-2024:0002", "scanlib3", "2:0.3-3.el9_3"),
        // Fixed before what is installed: not affected.
        ("RLSA-2024:0003", "scanlib5", "2:0.5~rc1-4.el9_3"),
    ];
    for (id, package, fixed) in advisories {
        let path = work.path().join(format!("{}.json", id.replace(':', "-")));
        std::fs::write(
            &path,
            serde_json::json!({
                "id": id, "modified": "2026-01-01T00:00:00Z",
                "affected": [{"package": {"ecosystem": "Rocky Linux:9", "name": package},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}],
            })
            .to_string(),
        )
        .unwrap();
        db.import_file(&path).unwrap();
    }
    let report = matcher::match_image(&image, &db).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.releases, vec!["rocky linux:9".to_string()]);
    let mut found: Vec<(String, String)> = report
        .findings
        .iter()
        .map(|f| {
            assert_eq!(f.state, FindingState::Fixed);
            (f.package.clone(), f.vulnerability.clone())
        })
        .collect();
    found.sort();
    // RLSA-2024:0001: scanlib0..scanlib6 (0.N~rc1 < 0.7) and scanlib7
    // (0.7~rc1 < 0.7); not scanlib8.. nor scanfix (1.2.3).
    let mut expected: Vec<(String, String)> = (0..=7)
        .map(|n| (format!("scanlib{n}"), "RLSA-2024:0001".to_string()))
        .collect();
    expected.push(("scanlib3".to_string(), "RLSA-2024:0002".to_string()));
    expected.sort();
    assert_eq!(found, expected);

    write_oci_layout(&layout, "damaged", &[base, damaged]);
    let source_text = format!("oci:{}:damaged", layout.display());
    let image =
        index::index_image_source(&source_text, &Source::parse(&source_text).unwrap(), &cache)
            .unwrap();
    assert!(image.packages.is_empty());
    assert_eq!(image.warnings.len(), 1, "{:?}", image.warnings);
    assert!(
        image.warnings[0]
            .starts_with("database /var/lib/rpm/rpmdb.sqlite: not an SQLite database (layer "),
        "{:?}",
        image.warnings
    );
}
