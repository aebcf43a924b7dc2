//! AWS KMS failure modes the emulator cannot produce (disabled, pending
//! deletion, access denied, not found, throttling), as modeled responses of
//! the real `aws-sdk-kms` client, mapped through `KmsError` to gRPC statuses.

use aws_sdk_kms::Client;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::describe_key::DescribeKeyError;
use aws_sdk_kms::types::error::{DisabledException, KmsInvalidStateException, NotFoundException};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use callvault::error::Error;
use callvault::kms::aws::AwsKms;
use callvault::kms::{EncryptionContext, Kms, KmsError};
use tonic::Code;

const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn json_error(kind: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"{kind}","message":"modeled {kind}"}}"#
    ))
}

async fn decrypt_with(rule: &Rule) -> KmsError {
    let client: Client = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [rule]);
    let kms = AwsKms::from_client(client, "eu-west-1");
    let ctx = EncryptionContext {
        tenant: "t".into(),
        recording: "r".into(),
    };
    kms.decrypt(ARN, b"wrapped", &ctx).await.unwrap_err()
}

#[tokio::test]
async fn modeled_kms_errors_map_to_precise_statuses() {
    let disabled = mock!(Client::decrypt).then_error(|| {
        DecryptError::DisabledException(
            DisabledException::builder()
                .message("key is disabled")
                .build(),
        )
    });
    let pending = mock!(Client::decrypt).then_error(|| {
        DecryptError::KmsInvalidStateException(
            KmsInvalidStateException::builder()
                .message(format!("{ARN} is pending deletion."))
                .build(),
        )
    });
    let other_state = mock!(Client::decrypt).then_error(|| {
        DecryptError::KmsInvalidStateException(
            KmsInvalidStateException::builder()
                .message("key is PendingImport")
                .build(),
        )
    });
    let denied = mock!(Client::decrypt)
        .sequence()
        .http_status(400, json_error("AccessDeniedException"))
        .repeatedly()
        .build();
    let not_found = mock!(Client::decrypt).then_error(|| {
        DecryptError::NotFoundException(NotFoundException::builder().message("no such key").build())
    });
    let throttled = mock!(Client::decrypt)
        .sequence()
        .http_status(400, json_error("ThrottlingException"))
        .repeatedly()
        .build();
    let bad_blob = mock!(Client::decrypt)
        .sequence()
        .http_status(400, json_error("InvalidCiphertextException"))
        .repeatedly()
        .build();

    let arn = ARN.to_owned();
    let cases: Vec<(&str, &Rule, KmsError, Code, &str)> = vec![
        (
            "disabled",
            &disabled,
            KmsError::Disabled { arn: arn.clone() },
            Code::FailedPrecondition,
            "is disabled",
        ),
        (
            "pending deletion",
            &pending,
            KmsError::PendingDeletion { arn: arn.clone() },
            Code::FailedPrecondition,
            "pending deletion",
        ),
        (
            "other state",
            &other_state,
            KmsError::InvalidState {
                arn: arn.clone(),
                state: "key is PendingImport".into(),
            },
            Code::FailedPrecondition,
            "PendingImport",
        ),
        (
            "access denied",
            &denied,
            KmsError::AccessDenied { arn: arn.clone() },
            Code::PermissionDenied,
            "denied",
        ),
        (
            "not found",
            &not_found,
            KmsError::NotFound { arn: arn.clone() },
            Code::FailedPrecondition,
            "not found",
        ),
        (
            "throttled",
            &throttled,
            KmsError::Throttled,
            Code::Unavailable,
            "throttled",
        ),
        (
            "bad ciphertext",
            &bad_blob,
            KmsError::InvalidCiphertext { arn: arn.clone() },
            Code::DataLoss,
            "does not match",
        ),
    ];
    for (name, rule, expected, code, needle) in cases {
        let err = decrypt_with(rule).await;
        assert_eq!(err, expected, "{name}");
        let status = tonic::Status::from(Error::Kms(err));
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{name}: `{}` lacks `{needle}`",
            status.message()
        );
        if !matches!(expected, KmsError::Throttled) {
            assert!(
                status.message().contains(ARN),
                "{name}: the status names the key: {}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn describe_key_not_found_is_reported() {
    let rule = mock!(Client::describe_key).then_error(|| {
        DescribeKeyError::NotFoundException(NotFoundException::builder().message("gone").build())
    });
    let client: Client = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule]);
    let kms = AwsKms::from_client(client, "eu-west-1");
    assert_eq!(
        kms.describe_key(ARN).await.unwrap_err(),
        KmsError::NotFound { arn: ARN.into() }
    );
}
