//! The identity key file: round trip, permissions, overwrite rules, every way a file can be wrong,
//! and no temporary files left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use themis_crypto::{Error, IdentityKeypair, KeyFileProblem};

fn problem(r: Result<IdentityKeypair, Error>, path: &Path) -> KeyFileProblem {
    match r {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.contains(&path.display().to_string()),
                "the message names the file: {shown}"
            );
            match e {
                Error::KeyFile { path: p, problem } => {
                    assert_eq!(p, path);
                    problem
                }
                other => panic!("not a key file error: {other:?}"),
            }
        }
    }
}

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn write_raw(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn read_problem(dir: &Path, content: &[u8]) -> (PathBuf, KeyFileProblem) {
    let path = dir.join("k");
    write_raw(&path, content);
    let p = problem(IdentityKeypair::read_from_file(&path), &path);
    (path, p)
}

fn valid_text(kp: &IdentityKeypair, seed: &[u8; 32]) -> String {
    format!(
        "themis-identity v1\npublic-key {}\nsecret-seed {}\n",
        hex::encode(kp.public().as_bytes()),
        hex::encode(seed)
    )
}

#[test]
fn write_then_read_mode_0600_and_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    let kp = IdentityKeypair::generate();
    kp.write_to_file(&path, false).unwrap();
    assert_eq!(entries(dir.path()), ["id.key"]);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let back = IdentityKeypair::read_from_file(&path).unwrap();
    assert_eq!(back.public(), kp.public());
    // Same secret too: same deterministic signature.
    assert_eq!(back.sign(b"m"), kp.sign(b"m"));
}

#[test]
fn written_file_has_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    let seed = [0x5a; 32];
    let kp = IdentityKeypair::from_seed(&seed);
    kp.write_to_file(&path, false).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, valid_text(&kp, &seed));
    assert_eq!(text.len(), 172);
}

#[test]
fn refuses_to_overwrite_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    let first = IdentityKeypair::generate();
    first.write_to_file(&path, false).unwrap();
    let before = fs::read(&path).unwrap();

    let second = IdentityKeypair::generate();
    let r = second.write_to_file(&path, false);
    assert!(matches!(
        r,
        Err(Error::KeyFile {
            problem: KeyFileProblem::AlreadyExists,
            ..
        })
    ));
    assert!(r.unwrap_err().to_string().contains("id.key"));
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(entries(dir.path()), ["id.key"]);

    second.write_to_file(&path, true).unwrap();
    assert_eq!(
        IdentityKeypair::read_from_file(&path).unwrap().public(),
        second.public()
    );
    assert_eq!(entries(dir.path()), ["id.key"]);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let kp = IdentityKeypair::generate();
    // Overwriting a directory fails at the final rename.
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    assert!(matches!(
        kp.write_to_file(&sub, true),
        Err(Error::KeyFile {
            problem: KeyFileProblem::Io(_),
            ..
        })
    ));
    assert_eq!(entries(dir.path()), ["sub"]);
    assert!(entries(&sub).is_empty());
    // A directory that does not exist fails before anything is created.
    let missing = dir.path().join("nope").join("id.key");
    assert!(kp.write_to_file(&missing, false).is_err());
    assert_eq!(entries(dir.path()), ["sub"]);
}

#[test]
fn missing_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.key");
    assert!(matches!(
        problem(IdentityKeypair::read_from_file(&path), &path),
        KeyFileProblem::Missing
    ));
    let d = dir.path().join("a-dir");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(
        problem(IdentityKeypair::read_from_file(&d), &d),
        KeyFileProblem::NotARegularFile
    ));
}

#[test]
fn group_or_world_accessible_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    IdentityKeypair::generate()
        .write_to_file(&path, false)
        .unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        match problem(IdentityKeypair::read_from_file(&path), &path) {
            KeyFileProblem::InsecurePermissions { mode: m } => assert_eq!(m, mode),
            other => panic!("{mode:o}: {other:?}"),
        }
    }
    for mode in [0o600, 0o400, 0o700] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        IdentityKeypair::read_from_file(&path).unwrap();
    }
}

#[test]
fn over_long_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_, p) = read_problem(dir.path(), &vec![b'#'; 5000]);
    assert!(
        matches!(
            p,
            KeyFileProblem::TooLarge {
                len: 5000,
                max: 4096
            }
        ),
        "{p:?}"
    );

    let openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
        -----END OPENSSH PRIVATE KEY-----\n";
    let (_, p) = read_problem(dir.path(), openssh);
    assert!(matches!(p, KeyFileProblem::NotAKeyFile { .. }), "{p:?}");
    let (_, p) = read_problem(
        dir.path(),
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI me@host\n",
    );
    assert!(matches!(p, KeyFileProblem::NotAKeyFile { .. }), "{p:?}");
    let (_, p) = read_problem(dir.path(), &[0xff, 0xfe, 0x00, 0x01, b'\n']);
    assert!(matches!(p, KeyFileProblem::NotAKeyFile { .. }), "{p:?}");
}

#[test]
fn wrong_version() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [3; 32];
    let good = valid_text(&IdentityKeypair::from_seed(&seed), &seed);
    for v in ["v2", "v0", "v10", "1"] {
        let text = good.replacen("v1", v, 1);
        match read_problem(dir.path(), text.as_bytes()).1 {
            KeyFileProblem::UnsupportedVersion { found, supported } => {
                assert_eq!((found.as_str(), supported), (v, 1));
            }
            other => panic!("{v}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_fields() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [9; 32];
    let kp = IdentityKeypair::from_seed(&seed);
    let good = valid_text(&kp, &seed);
    let pk_hex = hex::encode(kp.public().as_bytes());
    let seed_hex = hex::encode(seed);
    let cases: Vec<(String, &str)> = vec![
        // header
        (
            good.replace("themis-identity", "themis-identiti"),
            "not a key file",
        ),
        // public-key line: field name, hex, length, another valid key
        (good.replace("public-key", "public_key"), "corrupt line 2"),
        (
            good.replace(&pk_hex, &pk_hex.replacen(&pk_hex[..2], "zz", 1)),
            "corrupt line 2",
        ),
        (good.replace(&pk_hex, &pk_hex[..62]), "corrupt line 2"),
        (
            good.replace(&pk_hex, &format!("{pk_hex}00")),
            "corrupt line 2",
        ),
        (
            good.replace(
                &pk_hex,
                &hex::encode(IdentityKeypair::from_seed(&[1; 32]).public().as_bytes()),
            ),
            "mismatch",
        ),
        // secret-seed line
        (good.replace("secret-seed", "secret-sead"), "corrupt line 3"),
        (
            good.replace(&seed_hex, &format!("x{}", &seed_hex[1..])),
            "corrupt line 3",
        ),
        (good.replace(&seed_hex, &seed_hex[..63]), "corrupt line 3"),
        (good.replace(&seed_hex, &hex::encode([8u8; 32])), "mismatch"),
        // order and extra content
        (
            format!("themis-identity v1\nsecret-seed {seed_hex}\npublic-key {pk_hex}\n"),
            "corrupt line 2",
        ),
        (format!("{good}extra\n"), "corrupt line 4"),
    ];
    for (text, want) in cases {
        let p = read_problem(dir.path(), text.as_bytes()).1;
        let ok = matches!(
            (&p, want),
            (KeyFileProblem::NotAKeyFile { .. }, "not a key file")
                | (KeyFileProblem::Corrupt { line: 2, .. }, "corrupt line 2")
                | (KeyFileProblem::Corrupt { line: 3, .. }, "corrupt line 3")
                | (KeyFileProblem::Corrupt { line: 4, .. }, "corrupt line 4")
                | (KeyFileProblem::Mismatch, "mismatch")
        );
        assert!(ok, "want {want}, got {p:?} for\n{text}");
    }
    // Comments, blank lines, indentation, CRLF and upper-case hex are all accepted.
    let lenient = format!(
        "# my node\r\n\r\n  themis-identity v1\r\npublic-key {}\r\n# the secret\r\nsecret-seed {}  \r\n",
        pk_hex.to_uppercase(),
        seed_hex
    );
    write_raw(&dir.path().join("k"), lenient.as_bytes());
    assert_eq!(
        IdentityKeypair::read_from_file(&dir.path().join("k"))
            .unwrap()
            .public(),
        kp.public()
    );
}

/// Every proper prefix of a valid file is refused as truncated (the one prefix that only drops
/// the final line end is still a complete file and is accepted).
#[test]
fn every_prefix_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [0x77; 32];
    let kp = IdentityKeypair::from_seed(&seed);
    let good = valid_text(&kp, &seed);
    for len in 0..good.len() {
        let prefix = &good.as_bytes()[..len];
        let path = dir.path().join("k");
        write_raw(&path, prefix);
        let r = IdentityKeypair::read_from_file(&path);
        if len == good.len() - 1 {
            assert_eq!(r.unwrap().public(), kp.public());
            continue;
        }
        let p = problem(r, &path);
        let want = match len {
            0..=17 => "themis-identity v1",
            18..=93 => "public-key",
            _ => "secret-seed",
        };
        match p {
            KeyFileProblem::Truncated { field } => assert_eq!(field, want, "prefix {len}"),
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
    assert_eq!(entries(dir.path()), ["k"]);
}
