//! Code blocks that tests take from the documentation, so that what the docs show is what the
//! tests run: a block is marked by the line `<!-- test-block: NAME -->` right before its fence.
#![allow(dead_code)]

/// The text inside the fenced block that follows the `test-block: name` marker in `doc`
/// (a path relative to the repository).
pub fn marked_block(doc: &str, name: &str) -> String {
    let path = super::repo_root().join(doc);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let marker = format!("<!-- test-block: {name} -->");
    assert_eq!(
        text.lines().filter(|l| l.trim() == marker).count(),
        1,
        "{doc}: {marker} must appear exactly once"
    );
    let mut lines = text.lines().skip_while(|l| l.trim() != marker).skip(1);
    lines
        .next()
        .filter(|l| l.starts_with("```"))
        .unwrap_or_else(|| panic!("{doc}: no fenced block right after {marker}"));
    let mut block = String::new();
    for line in lines {
        if line.starts_with("```") {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("{doc}: the block after {marker} is not closed");
}

/// The block parsed as one YAML document.
pub fn marked_yaml(doc: &str, name: &str) -> serde_json::Value {
    let block = marked_block(doc, name);
    serde_norway::from_str(&block)
        .unwrap_or_else(|e| panic!("{doc}: the block {name} is not YAML: {e}\n{block}"))
}
