//! `smsbus.sms_encoding` and `smsbus.sms_segments` through SQL, against the
//! limits of 3GPP TS 23.038/23.040 and worked examples.

use smsbus_tests::db::{expect_error, scalar, TestDb};

async fn encoding(client: &tokio_postgres::Client, body: &str) -> String {
    scalar(client, "SELECT smsbus.sms_encoding($1)", &[&body]).await
}

async fn segments(client: &tokio_postgres::Client, body: &str, enc: Option<&str>) -> i32 {
    scalar(client, "SELECT smsbus.sms_segments($1, $2)", &[&body, &enc]).await
}

#[tokio::test]
async fn encoding_detection() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    assert_eq!(encoding(&c, "Hello, world!").await, "gsm7");
    // Every character of the basic table and the extension table.
    assert_eq!(
        encoding(
            &c,
            "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà"
        )
        .await,
        "gsm7"
    );
    assert_eq!(encoding(&c, "^{}\\[~]|€\u{0C}").await, "gsm7");
    assert_eq!(encoding(&c, "naïve").await, "ucs2");
    assert_eq!(encoding(&c, "`").await, "ucs2");
    assert_eq!(encoding(&c, "Привет").await, "ucs2");
    assert_eq!(encoding(&c, "你好").await, "ucs2");
    assert_eq!(encoding(&c, "👍").await, "ucs2");
    let null: Option<String> = scalar(&c, "SELECT smsbus.sms_encoding(NULL)", &[]).await;
    assert_eq!(null, None);
}

#[tokio::test]
async fn segment_counts() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let a = |n: usize| "a".repeat(n);
    // GSM 7-bit: 160 single, 153 per part.
    assert_eq!(segments(&c, "", None).await, 1);
    assert_eq!(segments(&c, &a(160), None).await, 1);
    assert_eq!(segments(&c, &a(161), None).await, 2);
    assert_eq!(segments(&c, &a(306), None).await, 2);
    assert_eq!(segments(&c, &a(307), None).await, 3);
    // Escaped characters take two septets: 80 euro signs fill one SMS.
    assert_eq!(segments(&c, &"€".repeat(80), None).await, 1);
    assert_eq!(segments(&c, &"€".repeat(81), None).await, 2);
    // An escape pair is never split: 152 + € + 152 needs a third part.
    assert_eq!(
        segments(&c, &format!("{}€{}", a(152), a(152)), None).await,
        3
    );
    // UCS-2: 70 single, 67 per part; a surrogate pair takes two units.
    assert_eq!(segments(&c, &"ж".repeat(70), None).await, 1);
    assert_eq!(segments(&c, &"ж".repeat(71), None).await, 2);
    assert_eq!(segments(&c, &"😀".repeat(35), None).await, 1);
    assert_eq!(segments(&c, &"😀".repeat(36), None).await, 2);
    // 67 emoji are 134 units, but a part holds 33 whole pairs.
    assert_eq!(segments(&c, &"😀".repeat(67), None).await, 3);
    // Forced encodings.
    assert_eq!(segments(&c, &a(100), Some("ucs2")).await, 2);
    assert_eq!(segments(&c, &"é".repeat(140), Some("latin1")).await, 1);
    assert_eq!(segments(&c, &"é".repeat(141), Some("latin1")).await, 2);
    // 8-bit data in hexadecimal digits: 140 octets single, 134 per part.
    assert_eq!(segments(&c, &"0f".repeat(140), Some("binary")).await, 1);
    assert_eq!(segments(&c, &"0F".repeat(141), Some("binary")).await, 2);
    assert_eq!(segments(&c, &"0f".repeat(269), Some("binary")).await, 3);
}

#[tokio::test]
async fn segment_errors() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    assert_eq!(
        expect_error(&c, "SELECT smsbus.sms_segments('hi', 'utf8')").await,
        (
            "22023".into(),
            "unknown encoding \"utf8\" (expected gsm7, ucs2, latin1 or binary)".into()
        )
    );
    assert_eq!(
        expect_error(&c, "SELECT smsbus.sms_segments('Ciao Жанна', 'gsm7')").await,
        (
            "22023".into(),
            "body cannot be encoded in gsm7: character 'Ж' (U+0416) at position 6".into()
        )
    );
}
