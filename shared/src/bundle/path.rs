//! Paths inside a bundle: relative, normalized, and unable to leave the directory they
//! are unpacked into.

/// Longest payload path accepted, in bytes (ustar's limit less the `files/` prefix).
pub const MAX_PATH_BYTES: usize = 240;

/// Why a path is unsafe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("absolute paths are not allowed")]
    Absolute,
    #[error("`..` would leave the bundle (path traversal)")]
    Traversal,
    #[error("`.` and empty components are not allowed; paths must be normalized")]
    NotNormalized,
    #[error("backslashes are not allowed")]
    Backslash,
    #[error("control characters are not allowed")]
    ControlCharacter,
    #[error("longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
}

/// Accepts `a/b/c.onnx`; refuses anything that could resolve outside the directory it is
/// joined to, or that different systems could read differently.
pub fn check_relative_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    for component in path.split('/') {
        match component {
            ".." => return Err(PathError::Traversal),
            "" | "." => return Err(PathError::NotNormalized),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths_pass() {
        for ok in ["model.onnx", "weights/part-1.bin", "a.b/c..d/e"] {
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn unsafe_paths_are_named() {
        assert_eq!(check_relative_path(""), Err(PathError::Empty));
        assert_eq!(check_relative_path("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(check_relative_path("../x"), Err(PathError::Traversal));
        assert_eq!(check_relative_path("a/../../x"), Err(PathError::Traversal));
        assert_eq!(check_relative_path("a/./b"), Err(PathError::NotNormalized));
        assert_eq!(check_relative_path("a/"), Err(PathError::NotNormalized));
        assert_eq!(check_relative_path("..\\x"), Err(PathError::Backslash));
        assert_eq!(
            check_relative_path("a\nb"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            check_relative_path(&"a".repeat(300)),
            Err(PathError::TooLong)
        );
    }
}
