//! Signed decision tokens for links and chat buttons.
// CONTRACT STUB — helper D owns this module.
