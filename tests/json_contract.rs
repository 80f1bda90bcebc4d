mod common;

fn placeholder() {}

crate::tests!(placeholder);
