//! CloudTrail record shapes, as AWS writes them.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::iso;
use crate::org::{Account, pick};

/// Who makes a call.
#[derive(Clone, Debug)]
pub enum Who {
    /// A role session: role ARN and session name.
    Role(String, String),
    /// An SSO user's assumed-role ARN.
    Sso(String),
    /// An AWS service acting for the account.
    Service(&'static str),
    /// An IAM user ARN.
    User(String),
}

pub fn uuid(rng: &mut ChaCha8Rng) -> String {
    let v: u128 = rng.random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn key_id(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    let s: String = (0..16)
        .map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[rng.random_range(0..32)]))
        .collect();
    format!("{prefix}{s}")
}

pub fn identity(rng: &mut ChaCha8Rng, who: &Who, account: &str) -> Value {
    match who {
        Who::Role(role_arn, session) => {
            let role = role_arn.rsplit('/').next().unwrap_or("role");
            json!({
                "type": "AssumedRole",
                "principalId": format!("AROA{}:{session}", &key_id(rng, "")[..12]),
                "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
                "accountId": account,
                "accessKeyId": key_id(rng, "ASIA"),
                "sessionContext": {
                    "sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLEROLEID", "arn": role_arn, "accountId": account, "userName": role},
                    "attributes": {"creationDate": "2026-01-01T00:00:00Z", "mfaAuthenticated": "false"}
                }
            })
        }
        Who::Sso(arn) => json!({
            "type": "AssumedRole",
            "principalId": format!("AROASSOEXAMPLE:{}", arn.rsplit('/').next().unwrap_or("user")),
            "arn": arn,
            "accountId": account,
            "accessKeyId": key_id(rng, "ASIA"),
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROASSOEXAMPLE", "arn": format!("arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_0a1b2c3d4e5f6a7b"), "accountId": account, "userName": "AWSReservedSSO_AdministratorAccess_0a1b2c3d4e5f6a7b"},
                "attributes": {"creationDate": "2026-01-01T00:00:00Z", "mfaAuthenticated": "true"}
            }
        }),
        Who::Service(svc) => json!({"type": "AWSService", "invokedBy": svc}),
        Who::User(arn) => json!({
            "type": "IAMUser",
            "principalId": format!("AIDA{}", &key_id(rng, "")[..16]),
            "arn": arn,
            "accountId": account,
            "accessKeyId": key_id(rng, "AKIA"),
            "userName": arn.rsplit('/').next().unwrap_or("user")
        }),
    }
}

/// One API call. `extra` adds or overrides top-level fields.
#[allow(clippy::too_many_arguments)]
pub fn record(
    rng: &mut ChaCha8Rng,
    time: &str,
    account: &str,
    region: &str,
    who: &Who,
    source: &str,
    name: &str,
    ip: &str,
    ua: &str,
    read_only: bool,
    request: Value,
    response: Value,
    extra: Option<Value>,
) -> Value {
    let mut r = json!({
        "eventVersion": "1.09",
        "userIdentity": identity(rng, who, account),
        "eventTime": time,
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": ua,
        "requestParameters": request,
        "responseElements": response,
        "requestID": uuid(rng),
        "eventID": uuid(rng),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": format!("{}.{region}.amazonaws.com", source.trim_end_matches(".amazonaws.com"))}
    });
    if let (Some(Value::Object(extra)), Some(obj)) = (extra, r.as_object_mut()) {
        for (k, v) in extra {
            obj.insert(k, v);
        }
    }
    r
}

pub const CORP_UAS: [&str; 6] = [
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.79 exe/x86_64.amzn.2023 prompt/off command/ec2.describe-instances",
    "console.amazonaws.com",
    "Terraform/1.7.4 (+https://www.terraform.io) terraform-provider-aws/5.40.0",
    "aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.150.0",
    "Boto3/1.34.64 md/Botocore#1.34.64 ua/2.0 os/linux#6.1.79 md/arch#x86_64 lang/python#3.11.8 cfg/retry-mode#legacy Botocore/1.34.64",
    "aws-sdk-java/2.25.11 Linux/6.1.79 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10 vendor/Amazon.com_Inc.",
];

pub fn corp_ip(rng: &mut ChaCha8Rng) -> String {
    let net = pick(rng, &["192.0.2", "198.51.100"]);
    format!("{net}.{}", rng.random_range(10..60))
}

/// Unrelated calls that fill a real trail.
pub const NOISE: [(&str, &str, bool); 22] = [
    ("ec2.amazonaws.com", "DescribeInstances", true),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", true),
    ("ec2.amazonaws.com", "DescribeVolumes", true),
    ("ec2.amazonaws.com", "CreateTags", false),
    ("s3.amazonaws.com", "ListBuckets", true),
    ("s3.amazonaws.com", "GetBucketLocation", true),
    ("sts.amazonaws.com", "AssumeRole", true),
    ("sts.amazonaws.com", "GetCallerIdentity", true),
    ("iam.amazonaws.com", "GetRole", true),
    ("iam.amazonaws.com", "ListRoles", true),
    ("kms.amazonaws.com", "Decrypt", true),
    ("kms.amazonaws.com", "GenerateDataKey", true),
    ("logs.amazonaws.com", "CreateLogStream", false),
    ("logs.amazonaws.com", "DescribeLogGroups", true),
    ("ssm.amazonaws.com", "GetParameter", true),
    ("secretsmanager.amazonaws.com", "GetSecretValue", true),
    ("lambda.amazonaws.com", "ListFunctions20150331", true),
    ("lambda.amazonaws.com", "GetFunction20150331v2", true),
    ("cloudformation.amazonaws.com", "DescribeStacks", true),
    ("monitoring.amazonaws.com", "DescribeAlarms", true),
    ("ecr.amazonaws.com", "GetAuthorizationToken", true),
    ("dynamodb.amazonaws.com", "DescribeTable", true),
];

pub fn instance_items(rng: &mut ChaCha8Rng, n: u64, itype: &str) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|_| json!({"instanceId": format!("i-{:017x}", rng.random::<u64>() >> 4), "imageId": "ami-0abcdef1234567890", "instanceType": itype, "instanceState": {"code": 0, "name": "pending"}, "privateIpAddress": format!("10.0.{}.{}", rng.random_range(0..255), rng.random_range(1..255))}))
        .collect();
    json!({"instancesSet": {"items": items}, "reservationId": format!("r-{:017x}", rng.random::<u64>() >> 4), "ownerId": "000000000000"})
}

/// Services that invoke Lambda functions on an account's behalf.
pub const INVOKERS: [&str; 3] = [
    "apigateway.amazonaws.com",
    "events.amazonaws.com",
    "sqs.amazonaws.com",
];

#[allow(clippy::too_many_arguments)] // one record's fields, in record order
pub fn run_instances(
    rng: &mut ChaCha8Rng,
    t: i64,
    a: &Account,
    region: &str,
    who: &Who,
    ip: &str,
    ua: &str,
    n: u64,
    itype: &str,
    error: Option<(&str, &str)>,
) -> Value {
    let req = json!({"instancesSet": {"items": [{"imageId": "ami-0abcdef1234567890", "minCount": 1, "maxCount": n}]}, "instanceType": itype, "monitoring": {"enabled": false}, "disableApiTermination": false});
    match error {
        None => {
            let resp = instance_items(rng, n, itype);
            record(
                rng,
                &iso(t),
                &a.id,
                region,
                who,
                "ec2.amazonaws.com",
                "RunInstances",
                ip,
                ua,
                false,
                req,
                resp,
                None,
            )
        }
        Some((code, msg)) => record(
            rng,
            &iso(t),
            &a.id,
            region,
            who,
            "ec2.amazonaws.com",
            "RunInstances",
            ip,
            ua,
            false,
            req,
            Value::Null,
            Some(json!({"errorCode": code, "errorMessage": msg})),
        ),
    }
}

#[allow(clippy::too_many_arguments)] // one record's fields, in record order
pub fn create_volume(
    rng: &mut ChaCha8Rng,
    t: i64,
    a: &Account,
    region: &str,
    who: &Who,
    ip: &str,
    ua: &str,
    size: u64,
    vtype: &str,
) -> Value {
    let az = format!("{region}{}", pick(rng, &["a", "b", "c"]));
    let mut req = json!({"size": size, "zone": az, "volumeType": vtype, "encrypted": true});
    if vtype == "io2" {
        req["iops"] = json!(3000 + 1000 * (size / 1000));
    }
    let resp = json!({"volumeId": format!("vol-{:017x}", rng.random::<u64>() >> 4), "size": size.to_string(), "zone": az, "status": "creating", "volumeType": vtype, "encrypted": true});
    record(
        rng,
        &iso(t),
        &a.id,
        region,
        who,
        "ec2.amazonaws.com",
        "CreateVolume",
        ip,
        ua,
        false,
        req,
        resp,
        None,
    )
}

pub fn invoke(
    rng: &mut ChaCha8Rng,
    t: i64,
    a: &Account,
    region: &str,
    function: &str,
    who: &Who,
    ip: &str,
) -> Value {
    let arn = format!("arn:aws:lambda:{region}:{}:function:{function}", a.id);
    let extra = json!({"eventCategory": "Data", "managementEvent": false, "readOnly": false, "resources": [{"accountId": a.id, "type": "AWS::Lambda::Function", "ARN": arn}]});
    record(
        rng,
        &iso(t),
        &a.id,
        region,
        who,
        "lambda.amazonaws.com",
        "Invoke",
        ip,
        "aws-internal/3 aws-sdk-java/1.12.667",
        false,
        json!({"functionName": arn, "invocationType": "Event"}),
        Value::Null,
        Some(extra),
    )
}
