//! The stats page an operator keeps open during an incident, and its CSV
//! view: per frontend and backend the rate now and at its peak, HTTP
//! responses by class, p50/p99 response times over the last minute, the
//! queue, health with the last check's outcome, and a graph of the last
//! three minutes drawn as inline SVG (no script: the page reloads itself
//! every 5 s). Built from a [`Report`] and the sampler's history; nothing
//! here is on the data path.

use std::fmt::Write;

use super::render::{BackendReport, Rates, Report};
use crate::model::counters::RESPONSE_CLASSES;
use crate::model::history::SECONDS;

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:1em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}\
th{background:#eee}td.l,th.l{text-align:left}.up{background:#c8f0c8}.down{background:#f4b8b8}\
.err{background:#f4b8b8;padding:.5em;border:1px solid #c00}.bad{color:#b00;font-weight:bold}\
svg{display:block}small{color:#666}";

/// The page.
pub(crate) fn html(r: &Report) -> String {
    let mut s = String::with_capacity(16 * 1024 + r.backends.len() * 2048);
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>Switchyard stats</title><style>{STYLE}</style></head><body>\
         <h1>Switchyard</h1><p>configuration generation {} · {} live snapshots · {} open connections · {} · \
         <a href=\"/stats;csv\">csv</a> · <a href=\"/stats;json\">json</a> · <a href=\"/metrics\">metrics</a></p>",
        r.generation,
        r.live_snapshots,
        r.open_connections,
        if r.ready { "ready" } else { "NOT READY" }
    );
    if let Some(e) = &r.reload.last_error {
        let _ = write!(s, "<div class=\"err\"><b>Last reload refused</b> (still serving the last good configuration):<pre>{}</pre></div>", esc(e));
    }
    frontends(&mut s, r);
    backends(&mut s, r);
    if !r.certificates.is_empty() {
        s.push_str(
            "<h2>Certificates</h2><table><tr><th class=\"l\">file</th><th>days to expiry</th></tr>",
        );
        for c in &r.certificates {
            let days = c.expires_in_days.map_or("?".into(), |d| format!("{d:.0}"));
            let _ = write!(
                s,
                "<tr><td class=\"l\">{}</td><td>{days}</td></tr>",
                esc(&c.path)
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}

fn frontends(s: &mut String, r: &Report) {
    s.push_str(
        "<h2>Frontends</h2><table><tr><th class=\"l\">name</th><th class=\"l\">bind</th><th>current</th>\
         <th>rate /s<br><small>now · peak</small></th><th>last 3 min</th><th>total</th>\
         <th>bytes in</th><th>bytes out</th><th>errors</th></tr>",
    );
    for f in &r.frontends {
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            esc(&f.bind),
            f.current,
            rate_cells(&f.rates),
            f.connections,
            f.bytes_in,
            f.bytes_out,
            f.errors
        );
    }
    s.push_str("</table>");
}

fn backends(s: &mut String, r: &Report) {
    s.push_str(
        "<h2>Backends and servers</h2><table><tr><th class=\"l\">backend / server</th><th>state</th><th>weight</th>\
         <th>current</th><th>rate /s<br><small>now · peak</small></th><th>last 3 min</th><th>total</th>",
    );
    for class in RESPONSE_CLASSES {
        let _ = write!(s, "<th>{class}</th>");
    }
    s.push_str(
        "<th>response ms<br><small>p50 · p99, 1 min</small></th><th>bytes in</th><th>bytes out</th><th>errors</th>\
         <th>queue<br><small>now · refused</small></th><th>check failures</th><th class=\"l\">last check</th>\
         <th>since change</th><th>denied · limited</th></tr>",
    );
    for b in &r.backends {
        backend_rows(s, b);
    }
    s.push_str("</table>");
}

fn backend_rows(s: &mut String, b: &BackendReport) {
    let _ = write!(
        s,
        "<tr><th class=\"l\">{} <small>({}, {})</small></th><td class=\"{}\">{}</td><td></td><td>{}</td>{}<td>{}</td>{}{}\
         <td>{}</td><td>{}</td><td{}>{}</td><td>{} · {}</td><td></td><td></td><td></td><td>{} · {}</td></tr>",
        esc(&b.name),
        b.termination,
        b.balance,
        state_class(b.up),
        state(b.up),
        b.current,
        rate_cells(&b.rates),
        b.connections,
        response_cells(&b.http_responses),
        latency_cell(b.rates.p50_ms, b.rates.p99_ms),
        b.bytes_in,
        b.bytes_out,
        bad(b.errors),
        b.errors,
        b.queue_current,
        b.queue_refused,
        b.denied,
        b.limited
    );
    for v in &b.servers {
        let since = v
            .since_change_seconds
            .map_or("-".to_string(), |t| format!("{t}s"));
        let _ = write!(
            s,
            "<tr><td class=\"l\">&nbsp;&nbsp;{} <small>{}</small></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td></td><td></td><td>{}</td>{}<td></td><td>{}</td><td>{}</td><td{}>{}</td><td>· {}</td><td>{}</td>\
             <td class=\"l\">{}</td><td>{}</td><td></td></tr>",
            esc(&v.name),
            esc(&v.address),
            state_class(v.up),
            state(v.up),
            v.weight,
            v.current,
            v.connections,
            response_cells(&v.http_responses),
            v.bytes_in,
            v.bytes_out,
            bad(v.errors),
            v.errors,
            v.full,
            v.check_failures,
            esc(&v.last_check),
            since
        );
    }
}

/// The rate now and at its peak, and the graph.
fn rate_cells(r: &Rates) -> String {
    format!(
        "<td>{} · {}</td><td>{}</td>",
        r.now,
        r.peak,
        graph(&r.graph, &r.errors_graph)
    )
}

fn response_cells(responses: &[u64; 6]) -> String {
    let mut s = String::new();
    for (i, n) in responses.iter().enumerate() {
        // 5xx stand out.
        let class = if i == 4 && *n > 0 {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = write!(s, "<td{class}>{n}</td>");
    }
    s
}

fn latency_cell(p50: Option<f64>, p99: Option<f64>) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    format!("<td>{} · {}</td>", ms(p50), ms(p99))
}

/// Sessions per second (blue) and errors per second (red) over the last
/// [`SECONDS`], one pixel a second, scaled to the largest of either.
fn graph(sessions: &[u32], errors: &[u32]) -> String {
    const HEIGHT: u32 = 24;
    let top = sessions
        .iter()
        .chain(errors)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let line = |samples: &[u32]| {
        // Right-aligned: the newest second at the right edge.
        let start = SECONDS.saturating_sub(samples.len());
        let mut points = String::with_capacity(samples.len() * 8);
        for (i, v) in samples.iter().enumerate() {
            let y = HEIGHT - (u64::from(*v) * u64::from(HEIGHT - 2) / u64::from(top)) as u32 - 1;
            let _ = write!(points, "{},{} ", start + i, y);
        }
        points
    };
    let peak = sessions.iter().copied().max().unwrap_or(0);
    // No red line while there is no error to show.
    let errors = if errors.iter().any(|e| *e > 0) {
        errors
    } else {
        &[]
    };
    format!(
        "<svg width=\"{SECONDS}\" height=\"{HEIGHT}\" viewBox=\"0 0 {SECONDS} {HEIGHT}\" role=\"img\">\
         <title>per second over the last {} s: peak {peak}</title>\
         <rect width=\"{SECONDS}\" height=\"{HEIGHT}\" fill=\"#f6f8fa\"/>\
         <polyline fill=\"none\" stroke=\"#3366cc\" stroke-width=\"1\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"#cc0000\" stroke-width=\"1\" points=\"{}\"/></svg>",
        sessions.len(),
        line(sessions),
        line(errors)
    )
}

fn bad(errors: u64) -> &'static str {
    if errors > 0 {
        " class=\"bad\""
    } else {
        ""
    }
}

fn state(up: bool) -> &'static str {
    if up {
        "UP"
    } else {
        "DOWN"
    }
}

fn state_class(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// HAProxy's CSV columns, in its order (`show stat`), up to `ttime`:
/// tools that read HAProxy's CSV by position read this too. Columns
/// Switchyard has no figure for are empty.
const CSV_COLUMNS: [&str; 62] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
];

/// One CSV row: `fields` by column name, the rest empty.
fn csv_row(out: &mut String, fields: &[(&str, String)]) {
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some((_, value)) = fields.iter().find(|(c, _)| c == column) {
            // Values never hold a comma or a line break (names are map
            // keys); a quote-free field is written as it is.
            out.push_str(&value.replace([',', '\n', '\r'], " "));
        }
    }
    out.push('\n');
}

/// The CSV view (`/stats;csv`): a `FRONTEND` row per listener, a row per
/// server and a `BACKEND` row per backend, as HAProxy writes them.
pub(crate) fn csv(r: &Report) -> String {
    let mut out = format!("# {}\n", CSV_COLUMNS.join(","));
    for f in &r.frontends {
        let mut fields = counts(
            (&f.name, "FRONTEND"),
            [f.current, f.connections, f.bytes_in, f.bytes_out],
        );
        fields.extend([
            ("ereq", f.errors.to_string()),
            ("status", "OPEN".into()),
            ("type", "0".into()),
            ("rate", f.rates.now.to_string()),
            ("rate_max", f.rates.peak.to_string()),
        ]);
        csv_row(&mut out, &fields);
    }
    for b in &r.backends {
        let mut up = 0;
        for v in &b.servers {
            up += u64::from(v.up);
            let mut fields = counts(
                (&b.name, &v.name),
                [v.current, v.connections, v.bytes_in, v.bytes_out],
            );
            fields.extend([
                ("econ", v.errors.to_string()),
                ("status", state(v.up).into()),
                ("weight", v.weight.to_string()),
                ("act", "1".into()),
                ("chkfail", v.check_failures.to_string()),
                ("type", "2".into()),
                ("check_status", v.last_check.clone()),
            ]);
            if let Some(t) = v.since_change_seconds {
                fields.push(("lastchg", t.to_string()));
            }
            http_fields(&mut fields, &v.http_responses, v.http_response_ms);
            csv_row(&mut out, &fields);
        }
        let mut fields = counts(
            (&b.name, "BACKEND"),
            [b.current, b.connections, b.bytes_in, b.bytes_out],
        );
        fields.extend([
            ("qcur", b.queue_current.to_string()),
            ("econ", b.errors.to_string()),
            ("status", state(b.up).into()),
            (
                "weight",
                b.servers
                    .iter()
                    .map(|v| u64::from(v.weight))
                    .sum::<u64>()
                    .to_string(),
            ),
            ("act", up.to_string()),
            ("type", "1".into()),
            ("rate", b.rates.now.to_string()),
            ("rate_max", b.rates.peak.to_string()),
        ]);
        http_fields(&mut fields, &b.http_responses, b.http_response_ms);
        csv_row(&mut out, &fields);
    }
    out
}

/// The columns every row has: its proxy and server names, and its
/// current sessions, total sessions, bytes in and bytes out.
fn counts(
    (pxname, svname): (&str, &str),
    [scur, stot, bin, bout]: [u64; 4],
) -> Vec<(&'static str, String)> {
    vec![
        ("pxname", pxname.to_string()),
        ("svname", svname.to_string()),
        ("scur", scur.to_string()),
        ("stot", stot.to_string()),
        ("bin", bin.to_string()),
        ("bout", bout.to_string()),
    ]
}

/// The HTTP columns, when the responses say the row serves HTTP.
fn http_fields(fields: &mut Vec<(&str, String)>, responses: &[u64; 6], rtime: Option<f64>) {
    if responses.iter().all(|n| *n == 0) {
        return;
    }
    // `hrsp_1xx` … `hrsp_other`, in the order of the response classes.
    let names = CSV_COLUMNS.iter().skip_while(|c| !c.starts_with("hrsp_"));
    for (name, n) in names.zip(responses) {
        fields.push((name, n.to_string()));
    }
    fields.push(("req_tot", responses.iter().sum::<u64>().to_string()));
    if let Some(ms) = rtime {
        fields.push(("rtime", format!("{ms:.0}")));
    }
}
