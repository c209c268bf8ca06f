use super::*;

/// 2026-12-02 08:00:00 UTC.
const T0: u64 = 1_796_198_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn histogram(values: &[u64]) -> Histogram<u64> {
    let mut h = new_histogram();
    for &v in values {
        h.record(v).expect("in range");
    }
    h
}

fn recorded(values: &[(u64, u64)]) -> Intervals {
    // (millisecond of the phase, value µs)
    let start = Instant::now();
    let mut r = IntervalRecorder::new(start, DEFAULT_INTERVAL);
    for &(ms, v) in values {
        r.record(start + Duration::from_millis(ms), v)
            .expect("record");
    }
    r.finish().expect("finish")
}

fn write(intervals: &[(&Intervals, Duration, Option<&str>)]) -> Vec<u8> {
    let mut w = LogWriter::new(Vec::new(), at(T0)).expect("header");
    for (i, offset, tag) in intervals {
        w.write_intervals(i, *offset, *tag).expect("write");
    }
    w.finish().expect("finish")
}

fn parse(bytes: &[u8]) -> Result<Vec<LoggedInterval>, HlogError> {
    parse_log(bytes, Path::new("a.hlog"))
}

#[test]
fn the_header_is_the_java_writers_with_a_unit_comment() {
    let log = String::from_utf8(write(&[])).expect("utf-8");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "#[Callosum handshake latency: values in microseconds, Interval_Max in milliseconds]",
            "#[Histogram log format version 1.3]",
            "#[StartTime: 1796198400.000 (seconds since epoch), Wed Dec 02 08:00:00 UTC 2026]",
            "#[BaseTime: 1796198400.000 (seconds since epoch)]",
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"",
        ]
    );
}

#[test]
fn interval_lines_have_the_java_columns() {
    let churn = recorded(&[(100, 1500), (1200, 2_000)]);
    let log = String::from_utf8(write(&[(
        &churn,
        Duration::from_millis(2500),
        Some("churn"),
    )]))
    .expect("utf-8");
    let lines: Vec<&str> = log.lines().skip(5).collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("Tag=churn,2.500,1.000,1.500,HISTF"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("Tag=churn,3.500,1.000,2.000,HISTF"),
        "{}",
        lines[1]
    );
}

#[test]
fn a_log_with_several_intervals_and_tags_reads_back_as_written() {
    let churn = recorded(&[(0, 10), (10, 20), (1500, 30), (4200, 40), (4900, 50)]);
    let hold = recorded(&[(300, 1000), (2300, 2000)]);
    let offset = Duration::from_secs(10);
    let log = write(&[
        (&churn, Duration::ZERO, Some("churn")),
        (&hold, offset, Some("hold")),
    ]);
    let read = parse(&log).expect("parses");
    // (tag, start, length, count, min, max)
    type Row<'a> = (Option<&'a str>, Duration, Duration, u64, u64, u64);
    let got: Vec<Row> = read
        .iter()
        .map(|i| {
            let h = &i.histogram;
            (
                i.tag.as_deref(),
                i.start,
                i.length,
                h.len(),
                h.min(),
                h.max(),
            )
        })
        .collect();
    let s = |secs| Duration::from_secs(T0 + secs);
    let one = Duration::from_secs(1);
    assert_eq!(
        got,
        [
            (Some("churn"), s(0), one, 2, 10, 20),
            (Some("churn"), s(1), one, 1, 30, 30),
            (Some("churn"), s(4), one, 2, 40, 50),
            (Some("hold"), s(10), one, 1, 1000, 1000),
            (Some("hold"), s(12), one, 1, 2000, 2000),
        ]
    );
}

#[test]
fn an_untagged_log_round_trips_through_write_log() {
    let i = recorded(&[(0, 7), (999, 8)]);
    let mut out = Vec::new();
    write_log(&mut out, at(T0), &i, None).expect("write");
    let read = parse(&out).expect("parses");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].tag, None);
    assert_eq!(read[0].histogram, histogram(&[7, 8]));
}

#[test]
fn a_tag_with_a_comma_or_space_is_refused() {
    let i = recorded(&[(0, 7)]);
    for tag in ["a,b", "a b"] {
        let err = write_log(Vec::new(), at(T0), &i, Some(tag)).expect_err("refused");
        assert!(matches!(err, HlogError::BadTag(_)), "{err}");
    }
}

#[test]
fn rolling_to_a_later_interval_encodes_the_finished_one_and_reuses_the_histogram() {
    let start = Instant::now();
    let mut r = IntervalRecorder::new(start, DEFAULT_INTERVAL);
    let buckets = r.histogram.distinct_values();
    for second in 0..100 {
        let t = start + Duration::from_secs(second);
        r.record(t, 100 + second).expect("record");
        r.record(t, 1_000_000 + second).expect("record");
        // Only the live interval's values are in the live histogram, which never grows.
        assert_eq!(r.histogram.len(), 2);
        assert_eq!(r.histogram.distinct_values(), buckets);
    }
    assert_eq!(r.finished().entries().len(), 99);
    let largest = r.finished().entries().iter().map(|e| e.bytes.len()).max();
    assert!(
        largest.is_some_and(|n| n < 200),
        "{largest:?} bytes for two values"
    );
    let done = r.finish().expect("finish");
    let indexes: Vec<u64> = done.entries().iter().map(|e| e.index).collect();
    assert_eq!(indexes, (0..100).collect::<Vec<_>>());
    assert_eq!(done.total().expect("sum").len(), 200);
}

#[test]
fn a_value_for_a_finished_interval_counts_in_the_current_one() {
    let start = Instant::now();
    let mut r = IntervalRecorder::new(start, DEFAULT_INTERVAL);
    r.record(start + Duration::from_millis(2100), 5)
        .expect("record");
    r.record(start + Duration::from_millis(500), 6)
        .expect("record");
    let done = r.finish().expect("finish");
    assert_eq!(done.entries().len(), 1);
    assert_eq!(done.entries()[0].index, 2);
    assert_eq!(
        done.entries()[0].histogram().expect("decodes"),
        histogram(&[5, 6])
    );
}

#[test]
fn merging_workers_sums_the_histograms_of_the_same_interval() {
    let mut a = recorded(&[(0, 10), (2000, 30)]);
    let b = recorded(&[(100, 20), (1000, 40), (2500, 50)]);
    a.merge(b).expect("merge");
    let got: Result<Vec<_>, _> = a.histograms().collect();
    assert_eq!(
        got.expect("decodes"),
        [
            (0, histogram(&[10, 20])),
            (1, histogram(&[40])),
            (2, histogram(&[30, 50])),
        ]
    );
    assert_eq!(a.entries()[2].max_us, 50);
}

#[test]
fn intervals_of_different_lengths_do_not_merge() {
    let mut a = Intervals::new(Duration::from_secs(1));
    let err = a
        .merge(Intervals::new(Duration::from_secs(10)))
        .expect_err("refused");
    assert!(matches!(err, HlogError::LengthMismatch { .. }), "{err}");
}

#[test]
fn encode_then_decode_gives_the_same_histogram() {
    let h = histogram(&[1, 2, 3, 1000, 65_000, 3_600_000_000]);
    let text = encode_histogram(&h).expect("encodes");
    assert!(text.starts_with("HISTF"), "{text}");
    assert_eq!(decode_histogram(&text).expect("decodes"), h);
    let empty = new_histogram();
    let text = encode_histogram(&empty).expect("encodes");
    assert_eq!(decode_histogram(&text).expect("decodes"), empty);
}

#[test]
fn damaged_histogram_strings_are_typed_errors() {
    let good = encode_histogram(&histogram(&[5, 6, 7])).expect("encodes");
    let bytes = BASE64.decode(&good).expect("base64");
    assert!(matches!(
        decode_histogram("not base64!"),
        Err(DecodeError::Base64(_))
    ));
    assert!(matches!(
        decode_histogram(""),
        Err(DecodeError::Truncated(_))
    ));
    let cut = BASE64.encode(&bytes[..bytes.len() - 4]);
    assert!(matches!(
        decode_histogram(&cut),
        Err(DecodeError::Truncated(_))
    ));
    assert!(matches!(
        decode_histogram("AAAAAAAAAAA="),
        Err(DecodeError::Cookie(0))
    ));
    // A V2 header declaring a 4 GiB payload it does not hold.
    let mut huge = V2_COOKIE.to_be_bytes().to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.resize(V2_HEADER_LEN, 0);
    let huge = BASE64.encode(&huge);
    assert!(matches!(
        decode_histogram(&huge),
        Err(DecodeError::Truncated(_))
    ));
    // Flipped bytes anywhere: an error or some histogram, never a panic.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let _ = decode_histogram(&BASE64.encode(&b));
    }
}

#[test]
fn a_malformed_line_names_the_file_and_line() {
    let mut log = write(&[(&recorded(&[(0, 10)]), Duration::ZERO, None)]);
    log.extend_from_slice(b"0.000,1.000,oops\n");
    match parse(&log) {
        Err(e @ HlogError::Malformed { line: 7, .. }) => {
            assert!(e.to_string().starts_with("a.hlog:7: "), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_base64_names_the_file_and_line() {
    let log = b"#[BaseTime: 10.000 (seconds since epoch)]\n1.000,1.000,0.1,@@@@\n";
    match parse(log) {
        Err(
            e @ HlogError::Histogram {
                line: 2,
                source: DecodeError::Base64(_),
                ..
            },
        ) => {
            assert!(
                e.to_string().starts_with("a.hlog:2: histogram: not base64"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_truncated_file_is_an_error_at_its_last_line() {
    let i = recorded(&[(0, 10), (1000, 2000), (2000, 300_000)]);
    let log = write(&[(&i, Duration::ZERO, Some("churn"))]);
    // Every cut inside the last interval line: a typed error naming line 8, never a panic.
    let last = log[..log.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("lines")
        + 1;
    for cut in last + 1..log.len() - 1 {
        match parse(&log[..cut]) {
            Err(HlogError::Malformed { line: 8, .. } | HlogError::Histogram { line: 8, .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let err = read_log(Path::new("/nonexistent/x.hlog")).expect_err("missing");
    assert!(
        err.to_string().starts_with("reading /nonexistent/x.hlog: "),
        "{err}"
    );
}

#[test]
fn timestamps_without_base_time_are_relative_to_a_start_time_far_above_them() {
    let h = encode_histogram(&histogram(&[3])).expect("encodes");
    let log =
        format!("#[StartTime: 1000000000.500 (seconds since epoch), x]\n2.250,1.000,0.0,{h}\n");
    let read = parse(log.as_bytes()).expect("parses");
    assert_eq!(read[0].start, Duration::from_millis(1_000_000_002_750));
    let log = format!(
        "#[StartTime: 1000000000.500 (seconds since epoch), x]\n1000000003.000,1.000,0.0,{h}\n"
    );
    let read = parse(log.as_bytes()).expect("parses");
    assert_eq!(read[0].start, Duration::from_secs(1_000_000_003));
}

#[test]
fn a_log_written_by_the_java_histogram_log_writer_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tagged-non-monotonic.hlog");
    let read = read_log(&path).expect("reads");
    let got: Vec<(Option<&str>, u128, u128)> = read
        .iter()
        .map(|i| (i.tag.as_deref(), i.start.as_millis(), i.length.as_millis()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("A"), 2133, 1001),
            (Some("A"), 3134, 1001),
            (Some("B"), 127, 1007),
            (Some("B"), 1134, 999),
            (Some("C"), 6134, 999),
            (Some("C"), 7133, 999),
        ]
    );
    // The Interval_Max column is the histogram's max in ns / 10^6.
    let logged_max = [0.426, 0.426, 2.769, 0.442, 0.442, 0.459];
    for (i, max) in read.iter().zip(logged_max) {
        let decoded = i.histogram.max() as f64 / 1e6;
        assert!((decoded - max).abs() < 0.001, "{decoded} vs {max}");
        assert!(!i.histogram.is_empty());
    }
}

#[test]
fn java_dates_are_printed_in_utc() {
    assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
    assert_eq!(java_date(1_441_812_279), "Wed Sep 09 15:24:39 UTC 2015");
    assert_eq!(java_date(951_782_400), "Tue Feb 29 00:00:00 UTC 2000");
}

#[test]
fn seconds_have_three_decimals() {
    assert_eq!(seconds(Duration::ZERO), "0.000");
    assert_eq!(seconds(Duration::from_micros(1_234_567)), "1.235");
    assert_eq!(seconds(Duration::from_millis(61_001)), "61.001");
}
