//! PLACEHOLDER owned by the BPE helper.
