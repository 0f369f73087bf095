//! The registries against the places that repeat them: README.md's SQLSTATE table and the SQL
//! files' literals. A test that fails here means one of them drifted from `codes.rs` or
//! `limits.rs`: mend the copy, not the registry (codes are stable).

use crate::codes::CODES;

fn repo_file(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sql_files() -> Vec<(String, String)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql");
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "sql") {
                let name = path.display().to_string();
                // Update scripts keep what an older version said; only the current files count.
                if !name.contains("--") {
                    files.push((name, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    files
}

#[test]
fn readme_lists_every_code_as_the_registry_does() {
    let readme = repo_file("README.md");
    for c in CODES {
        let row = format!("| {} | {} | {} |", c.sqlstate, c.name, c.raised_when);
        assert!(readme.contains(&row), "README.md lacks the row\n{row}");
    }
}

#[test]
fn sql_raises_only_registered_codes() {
    for (name, text) in sql_files() {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("ERRCODE = '") {
            let code = &rest[at + 11..at + 16];
            assert!(
                CODES.iter().any(|c| c.sqlstate == code) || !code.starts_with("WA"),
                "{name} raises {code}, which codes.rs does not list"
            );
            rest = &rest[at + 16..];
        }
    }
}
