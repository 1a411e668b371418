//! Ships the shared store's Lua script without its comments and indentation: the script travels in
//! every binding (the wasm module's size budget) and to Redis on every `EVAL`. The commented source
//! stays `src/shared/admit.lua`; what ships is `$OUT_DIR/admit.lua` (`SCRIPT`).

use std::path::Path;

fn main() {
    let source = "src/shared/admit.lua";
    println!("cargo:rerun-if-changed={source}");
    let text = std::fs::read_to_string(source).expect("src/shared/admit.lua");
    let mut out = String::with_capacity(text.len() / 2);
    for line in text.lines() {
        let line = line.trim();
        // Whole-line comments only: Lua has no other use of a line starting with `--`.
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("admit.lua");
    std::fs::write(dest, out).expect("write the shipped script");
}
