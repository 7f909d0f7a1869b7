//! Test plugin: a valid shared library that does not export `llq_plugin_entry`.
#[no_mangle]
pub extern "C" fn something_else() -> u32 {
    7
}
