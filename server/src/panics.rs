//! What a caught panic says: the shard catches panics per connection (a handler's, a slot
//! source's) and logs their message with the connection it cost.

/// A panic's message, when it has one (`panic!` with a literal or a formatted string).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
