//! Test plugin: a descriptor that claims ABI version 99 (written against the raw ABI, as a
//! plugin from a future SDK would look to this host).
use llq_sdk::abi::LlqPluginV1;

#[repr(C)]
pub struct FutureDescriptor {
    abi_version: u32,
    struct_size: u32,
}

static DESC: FutureDescriptor = FutureDescriptor { abi_version: 99, struct_size: 8 };

#[no_mangle]
pub extern "C" fn llq_plugin_entry() -> *const LlqPluginV1 {
    &DESC as *const FutureDescriptor as *const LlqPluginV1
}
