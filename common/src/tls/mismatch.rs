//! A client speaking plain text to a TLS member, or TLS to a plain-text one, gets errors
//! from deep in the stack ("h2 protocol error: ... frame with invalid size", "received
//! corrupt message of type InvalidContentType"); this recognises them and says what is
//! wrong and what to do.

/// An error's message and the causes under it (a refused TLS handshake shows up only in a
/// transport error's sources, e.g. "received fatal alert: CertificateExpired").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A failed call's message and the causes under it (without the status's code and
/// metadata, which say nothing to a person).
pub fn status_text(s: &tonic::Status) -> String {
    match std::error::Error::source(s).map(error_chain) {
        Some(causes) if !s.message().contains(&causes) => format!("{}: {causes}", s.message()),
        _ => s.message().to_string(),
    }
}

/// What the error text of a failed call means when the two ends disagree about TLS, given
/// whether this side used TLS; `None` when it is something else.
pub fn mismatch(used_tls: bool, error: &str) -> Option<&'static str> {
    if used_tls {
        // rustls read the plain-text server's HTTP/2 bytes as a TLS record.
        (error.contains("InvalidContentType") || error.contains("corrupt message")).then_some(
            "the member speaks plain text (it runs with --dev or --insecure), not TLS: \
             use --insecure against it, or run the members with certificates",
        )
    } else {
        // The HTTP/2 client read the TLS server's handshake records as frames.
        (error.contains("frame with invalid size")
            || error.contains("invalid HTTP version")
            || (error.contains("http2 error") && error.contains("connection error")))
        .then_some(
            "the member requires mutual TLS, and this client spoke plain text (--insecure): \
             give --tls-ca, --tls-cert and --tls-key (or RDMAQ_TLS_CA/CERT/KEY) instead",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::mismatch;

    #[test]
    fn both_directions_are_recognised_and_nothing_else() {
        let plain_to_tls = "h2 protocol error: http2 error: transport error: connection error \
                            detected: frame with invalid size";
        let tls_to_plain = "received corrupt message of type InvalidContentType: transport error";
        assert!(mismatch(false, plain_to_tls).unwrap().contains("--tls-ca"));
        assert!(mismatch(true, tls_to_plain).unwrap().contains("--insecure"));
        assert_eq!(mismatch(true, plain_to_tls), None);
        assert_eq!(mismatch(false, tls_to_plain), None);
        assert_eq!(
            mismatch(true, "received fatal alert: CertificateExpired"),
            None
        );
        assert_eq!(
            mismatch(false, "tcp connect error: Connection refused"),
            None
        );
    }
}
