//! results/README.md documents `llq-results/2` with tables generated from the doc comments of
//! the types in host/src/results/schema.rs: this fails when the two disagree. `make
//! results-doc` (LLQ_BLESS=1) rewrites the tables from the types.

mod common;

const BEGIN: &str = "<!-- schema:begin: generated from host/src/results/schema.rs by `make results-doc` -->";
const END: &str = "<!-- schema:end -->";

#[test]
fn results_readme_is_generated_from_the_schema_types() {
    let path = common::root().join("results/README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(i), Some(j)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{} has no `{BEGIN}` … `{END}` section", path.display());
    };
    let have = text[i + BEGIN.len()..j].trim();
    let want = llq_host::results::schema::markdown();
    if have == want.trim() {
        return;
    }
    if std::env::var_os("LLQ_BLESS").is_some() {
        let new = format!("{}{BEGIN}\n{}\n{}", &text[..i], want.trim(), &text[j..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    panic!("{}'s schema tables differ from host/src/results/schema.rs: run `make results-doc`\n--- generated:\n{want}", path.display());
}

#[test]
fn every_field_is_documented() {
    // A field without a doc comment would be an empty cell in the README.
    let doc = llq_host::results::schema::markdown();
    let blank: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `") && l.ends_with("|  |")).collect();
    assert!(blank.is_empty(), "fields without a doc comment in results/schema.rs: {blank:#?}");
}
