//! Just enough DER to read a certificate's expiry (`notAfter`) and serial
//! number, and a CRL's `nextUpdate`: for load-time warnings, the
//! days-to-expiry metric and log lines. Pure, bounded, no allocation;
//! anything unexpected is `None`.

/// Seconds since the Unix epoch at which the certificate expires.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1; // explicit version
    }
    let rest = skip(tbs, 0x02)?; // serial number
    let rest = skip(rest, 0x30)?; // signature algorithm
    let rest = skip(rest, 0x30)?; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let after = skip_any(validity)?; // notBefore
    let tag = *after.first()?;
    let (time, _) = element(after, tag)?;
    parse_time(tag, time)
}

/// The serial number of a certificate (the INTEGER's content bytes).
pub(crate) fn serial(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1;
    }
    element(tbs, 0x02).map(|(serial, _)| serial)
}

/// `0a:1b:…`, as certificate tools print serial numbers.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Seconds since the Unix epoch at which a CRL says the next one is due
/// (`None` when it has no nextUpdate or cannot be read).
pub(crate) fn crl_next_update(der: &[u8]) -> Option<i64> {
    let (list, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(list, 0x30)?;
    if tbs.first() == Some(&0x02) {
        tbs = skip(tbs, 0x02)?; // version
    }
    let rest = skip(tbs, 0x30)?; // signature algorithm
    let rest = skip(rest, 0x30)?; // issuer
    let rest = skip_any(rest)?; // thisUpdate
    let tag = *rest.first()?;
    let (time, _) = element(rest, tag)?;
    parse_time(tag, time)
}

/// What a client certificate says, as HAProxy's `ssl_c_*` fetches give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    /// Subject, OpenSSL one-line form: `/C=US/O=Example/CN=client`.
    pub(crate) subject: String,
    /// The subject's common name.
    pub(crate) common_name: Option<String>,
    pub(crate) issuer: String,
    /// notBefore and notAfter as written (`YYMMDDhhmmssZ`).
    pub(crate) not_before: String,
    pub(crate) not_after: String,
}

/// Subject, issuer and validity of a certificate.
pub(crate) fn describe(der: &[u8]) -> Option<Described> {
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1;
    }
    let rest = skip(tbs, 0x02)?; // serial
    let rest = skip(rest, 0x30)?; // signature algorithm
    let (issuer, rest) = element(rest, 0x30)?;
    let (validity, rest) = element(rest, 0x30)?;
    let (subject, _) = element(rest, 0x30)?;
    let time = |input: &[u8]| -> Option<(String, usize)> {
        let tag = *input.first()?;
        let (text, after) = element(input, tag)?;
        let used = input.len() - after.len();
        Some((String::from_utf8_lossy(text).into_owned(), used))
    };
    let (not_before, used) = time(validity)?;
    let (not_after, _) = time(validity.get(used..)?)?;
    let subject_parts = name(subject)?;
    let common_name = subject_parts
        .iter()
        .find(|(k, _)| k == "CN")
        .map(|(_, v)| v.clone());
    Some(Described {
        subject: one_line(&subject_parts),
        common_name,
        issuer: one_line(&name(issuer)?),
        not_before,
        not_after,
    })
}

/// The attributes of a Name, in order: (short name or dotted OID, value).
fn name(mut input: &[u8]) -> Option<Vec<(String, String)>> {
    let mut parts = Vec::new();
    while !input.is_empty() {
        let (mut set, rest) = element(input, 0x31)?;
        input = rest;
        while !set.is_empty() {
            let (attribute, more) = element(set, 0x30)?;
            set = more;
            let (oid, value) = element(attribute, 0x06)?;
            let tag = *value.first()?;
            let (text, _) = element(value, tag)?;
            parts.push((oid_name(oid), String::from_utf8_lossy(text).into_owned()));
        }
    }
    Some(parts)
}

fn one_line(parts: &[(String, String)]) -> String {
    parts.iter().map(|(k, v)| format!("/{k}={v}")).collect()
}

fn oid_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        other => {
            // Dotted form: the first byte holds two arcs, then base-128.
            let mut arcs = Vec::new();
            let mut value = 0u64;
            for (i, &b) in other.iter().enumerate() {
                if i == 0 {
                    arcs.push(u64::from(b / 40));
                    arcs.push(u64::from(b % 40));
                    continue;
                }
                value = (value << 7) | u64::from(b & 0x7f);
                if b & 0x80 == 0 {
                    arcs.push(value);
                    value = 0;
                }
            }
            let arcs: Vec<String> = arcs.iter().map(u64::to_string).collect();
            arcs.join(".")
        }
    }
}

/// The contents of the element at the start of `input` if it has tag
/// `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

fn skip(input: &[u8], tag: u8) -> Option<&[u8]> {
    element(input, tag).map(|(_, rest)| rest)
}

fn skip_any(input: &[u8]) -> Option<&[u8]> {
    skip(input, *input.first()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`, tag 0x18) to Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(text.get(r)?).ok()?;
        s.parse().ok()
    };
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        0x18 => (digits(0..4)?, 4),
        _ => return None,
    };
    let month = digits(rest..rest + 2)?;
    let day = digits(rest + 2..rest + 4)?;
    let hour = digits(rest + 4..rest + 6)?;
    let minute = digits(rest + 6..rest + 8)?;
    let second = digits(rest + 8..rest + 10)?;
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_of_an_rcgen_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 7, 4);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        // 2031-07-04T00:00:00Z
        assert_eq!(not_after(cert.der()), Some(1_940_889_600));
    }

    #[test]
    fn reads_serial_and_crl_next_update() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(0x0a1b2c_u64));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(serial(cert.der()).map(hex).as_deref(), Some("0a:1b:2c"));
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2030, 1, 1),
            next_update: rcgen::date_time_ymd(2031, 7, 4),
            crl_number: rcgen::SerialNumber::from(1_u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&cert, &key)
        .expect("crl");
        assert_eq!(crl_next_update(crl.der()), Some(1_940_889_600));
    }

    #[test]
    fn describes_subject_issuer_and_validity() {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Test CA");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let mut params = rcgen::CertificateParams::new(vec!["c.test".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client one");
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2031, 7, 4);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        let d = describe(cert.der()).expect("described");
        assert_eq!(d.subject, "/C=DE/CN=client one");
        assert_eq!(d.common_name.as_deref(), Some("client one"));
        assert_eq!(d.issuer, "/O=Test CA");
        assert_eq!(d.not_before, "260102000000Z");
        assert_eq!(d.not_after, "310704000000Z");
        assert_eq!(
            oid_name(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
        assert_eq!(describe(b"\x30\x00"), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(serial(b"\x30"), None);
        assert_eq!(crl_next_update(&[0x30, 0x02, 0x30, 0x00]), None);
    }
}
