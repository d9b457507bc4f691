//! The documents tell the truth: every example manifest in `docs/manifest.md` is accepted by
//! the host's parser, and every error its table shows is the parser's exact text.

use std::path::Path;

use plugbay_core::Manifest;
use plugbay_testkit::workspace_root;

/// `docs/manifest.md`.
fn manifest_doc() -> String {
    let path = workspace_root().join("docs/manifest.md");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The ```toml blocks of `text` after the heading `heading`, up to the next `## ` heading.
fn toml_blocks<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading:?} in docs/manifest.md"));
    let section = &text[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```toml\n")
        .skip(1)
        .map(|block| &block[..block.find("```").expect("a closed block")])
        .collect()
}

#[test]
fn every_example_manifest_in_the_docs_is_accepted() {
    let doc = manifest_doc();
    let examples = toml_blocks(&doc, "\n## Examples");
    assert_eq!(examples.len(), 3, "one example per runtime");
    for example in examples {
        let id = example
            .lines()
            .find_map(|line| line.strip_prefix("id = \""))
            .and_then(|rest| rest.split('"').next())
            .expect("the example names its id");
        let path = Path::new("plugins").join(id).join("plugin.toml");
        if let Err(error) = Manifest::parse(example.as_bytes(), &path, Some(id)) {
            panic!("the example {id} in docs/manifest.md is refused: {error}");
        }
    }
}

#[test]
fn every_error_the_manifest_docs_show_is_the_parsers_text() {
    let doc = manifest_doc();
    let errors = &doc[doc.find("\n## Errors").expect("an Errors section")..];
    let sample = toml_blocks(&doc, "\n## Errors")[0];
    let path = Path::new("plugins/text-tools/plugin.toml");
    Manifest::parse(sample.as_bytes(), path, Some("text-tools")).expect("the sample itself is valid");
    let rows: Vec<&str> = errors.lines().filter(|line| line.starts_with("| line ")).collect();
    assert!(rows.len() >= 5, "the table of changes and errors: {rows:?}");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let (change, expected) = (cells[0], cells[1].trim_matches('`').trim());
        let (line, edit) = change
            .strip_prefix("line ")
            .and_then(|rest| rest.split_once(':').or_else(|| rest.split_once(' ')))
            .expect("`line N: ...` or `line N removed`");
        let line: usize = line.parse().expect("a line number");
        let mut lines: Vec<String> = sample.lines().map(str::to_owned).collect();
        match edit.trim() {
            "removed" => {
                lines.remove(line - 1);
            }
            replacement => lines[line - 1] = replacement.trim_matches('`').to_owned(),
        }
        let changed = lines.join("\n");
        let error = Manifest::parse(changed.as_bytes(), path, Some("text-tools"))
            .expect_err(&format!("{change} is refused"));
        assert_eq!(error.to_string(), expected, "the error docs/manifest.md shows for {change}");
    }
}
