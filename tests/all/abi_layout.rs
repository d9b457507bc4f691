//! `include/plugbay.h` and `plugbay-abi` describe the same memory: a C compiler checks every
//! size and offset the Rust side reports with static assertions.

use plugbay_testkit::include_dir;

#[test]
fn header_and_rust_types_have_the_same_layout() {
    let mut source = String::from("#include <stddef.h>\n#include \"plugbay.h\"\n");
    let mut checks = 0;
    for (type_name, field, value) in plugbay_abi::layout_facts() {
        let expression = if field.is_empty() {
            format!("sizeof({type_name})")
        } else {
            format!("offsetof({type_name}, {field})")
        };
        source.push_str(&format!(
            "_Static_assert({expression} == {value}, \"{type_name} {field}: Rust says {value}\");\n"
        ));
        checks += 1;
    }
    source.push_str(&format!(
        "_Static_assert(PLUGBAY_ABI_VERSION == {}, \"ABI version\");\n\
         _Static_assert(PLUGBAY_FLAG_THREAD_SAFE == {} && PLUGBAY_FLAG_UNLOADABLE == {}, \"flags\");\n\
         _Static_assert(PLUGBAY_INTERNAL == {} && PLUGBAY_UNAVAILABLE == {}, \"status codes\");\n",
        plugbay_abi::ABI_VERSION,
        plugbay_abi::FLAG_THREAD_SAFE,
        plugbay_abi::FLAG_UNLOADABLE,
        plugbay_abi::STATUS_INTERNAL,
        plugbay_abi::STATUS_UNAVAILABLE,
    ));
    assert!(checks >= 30, "every struct and field is covered");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layout.c");
    std::fs::write(&file, &source).unwrap();
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = std::process::Command::new(compiler)
        .args(["-std=c11", "-fsyntax-only", "-Wall", "-Werror", "-I"])
        .arg(include_dir())
        .arg(&file)
        .output()
        .expect("a C compiler runs (apt-get install -y gcc)");
    assert!(output.status.success(), "layout mismatch:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_wrong_layout_is_caught() {
    // The check above must be able to fail: assert a deliberately wrong size.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.c");
    std::fs::write(&file, "#include \"plugbay.h\"\n_Static_assert(sizeof(plugbay_call_t) == 1, \"x\");\n")
        .unwrap();
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = std::process::Command::new(compiler)
        .args(["-std=c11", "-fsyntax-only", "-I"])
        .arg(include_dir())
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}
