//! The layout shared by the signed texts a node reads (release manifests,
//! approver certificates): a first line naming the format, `name value`
//! lines, and a last line `signature ed25519:<base64>` over every byte
//! before it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A signed text split into what was signed and its signature.
pub(crate) struct SignedText<'a> {
    /// Every byte before the signature line.
    pub(crate) signed: &'a str,
    /// The signed lines after the first, each as `(line, name, value)`.
    pub(crate) fields: Vec<(&'a str, &'a str, &'a str)>,
    /// The decoded signature, or the signature line as written when it is
    /// not `ed25519:<base64>`.
    pub(crate) signature: Result<Vec<u8>, &'a str>,
}

/// Why a text is not one of ours.
pub(crate) enum SplitError {
    /// Its first line is not `magic`.
    NotOurs,
    /// It starts right but has no signature line.
    Unsigned,
}

/// Splits `text`, whose first line must be `magic`.
pub(crate) fn split<'a>(text: &'a str, magic: &str) -> Result<SignedText<'a>, SplitError> {
    let Some(at) = text.find("\nsignature ") else {
        return Err(if text.starts_with(magic) {
            SplitError::Unsigned
        } else {
            SplitError::NotOurs
        });
    };
    let (signed, signature_line) = text.split_at(at + 1);
    let mut lines = signed.lines();
    if lines.next() != Some(magic) {
        return Err(SplitError::NotOurs);
    }
    let fields = lines
        .map(|line| {
            let (name, value) = line.split_once(' ').unwrap_or((line, ""));
            (line, name, value)
        })
        .collect();
    let signature = signature_line
        .trim_end_matches('\n')
        .strip_prefix("signature ed25519:")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or_else(|| signature_line.trim_end());
    Ok(SignedText {
        signed,
        fields,
        signature,
    })
}
