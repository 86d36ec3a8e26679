//! Just enough DER to read a certificate's expiry (`notAfter`) and serial
//! number, and a CRL's `nextUpdate`: for load-time warnings, the
//! days-to-expiry metric and log lines. Pure, bounded, no allocation;
//! anything unexpected is `None`.

/// Seconds since the Unix epoch at which the certificate expires.
pub fn not_after(der: &[u8]) -> Option<i64> {
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
pub fn serial(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1;
    }
    element(tbs, 0x02).map(|(serial, _)| serial)
}

/// `0a:1b:…`, as certificate tools print serial numbers.
pub fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Seconds since the Unix epoch at which a CRL says the next one is due
/// (`None` when it has no nextUpdate or cannot be read).
pub fn crl_next_update(der: &[u8]) -> Option<i64> {
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
    fn garbage_is_none() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(serial(b"\x30"), None);
        assert_eq!(crl_next_update(&[0x30, 0x02, 0x30, 0x00]), None);
    }
}
