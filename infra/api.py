"""API: an HTTP API (API Gateway v2) in front of the `dicomweb` function, every route behind a JWT
authorizer (a Cognito user pool created here, or an external OIDC issuer from context), CORS,
stage throttling and JSON access logs to an encrypted log group.

HTTP APIs pass binary bodies through as base64 (Mangum sets `isBase64Encoded`), so no binary media
types are configured; bodies above Lambda's 6 MB response limit are answered by the function with
`303 See Other` to a presigned S3 URL of a pre-packed body (PACS_MAX_INLINE_RESPONSE).
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import PacsConfig
from infra.network import retention

THROTTLE_RATE, THROTTLE_BURST = 200, 400
#: The fields of one access-log line (API Gateway v2 context variables).
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "ip": "$context.identity.sourceIp",
    "sub": "$context.authorizer.claims.sub", "requestTime": "$context.requestTime",
    "method": "$context.httpMethod", "path": "$context.path", "status": "$context.status",
    "bytes": "$context.responseLength", "latencyMs": "$context.responseLatency",
    "integrationError": "$context.integrationErrorMessage",
})
#: The OAuth scopes the viewer asks for.
SCOPES = ("openid", "email", "profile")


class Api(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, fn: lambda_.IFunction,
                 logs_key: kms.IKey) -> None:
        super().__init__(scope, cid)
        if config.auth == "oidc":
            issuer, audience = config.oidc_issuer, list(config.oidc_audience)
        else:
            issuer, audience = self._cognito(config)
        authorizer = authorizers.HttpJwtAuthorizer("Jwt", issuer, jwt_audience=audience,
                                                   identity_source=["$request.header.Authorization"])
        self.api = apigw.HttpApi(
            self, "Http", api_name=f"pacs-{config.stage}-dicomweb",
            description="DICOMweb (QIDO-RS, WADO-RS, STOW-RS) of the PACS",
            create_default_stage=False,
            default_integration=integrations.HttpLambdaIntegration("DicomWeb", fn),
            default_authorizer=authorizer,
            cors_preflight=apigw.CorsPreflightOptions(
                allow_origins=list(config.cors_origins),
                allow_methods=[apigw.CorsHttpMethod.GET, apigw.CorsHttpMethod.POST,
                               apigw.CorsHttpMethod.DELETE, apigw.CorsHttpMethod.OPTIONS],
                allow_headers=["Authorization", "Content-Type", "Accept", "Accept-Encoding"],
                expose_headers=["Content-Type", "Content-Length", "Location", "ETag", "Warning"],
                max_age=Duration.hours(1),
            ),
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", encryption_key=logs_key,
                                         retention=retention(config.retention_days),
                                         removal_policy=RemovalPolicy.RETAIN)
        self.stage = self.api.add_stage(
            "DefaultStage", stage_name="$default", auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=ACCESS_LOG_FORMAT)
        self.url = self.api.api_endpoint
        CfnOutput(self, "DicomWebUrl", value=f"{self.url}/dicomweb",
                  description="DICOMweb root (QIDO-RS/WADO-RS/STOW-RS) for OHIF and other clients")
        CfnOutput(self, "JwtIssuer", value=issuer)

    def _cognito(self, config: PacsConfig) -> tuple[str, list[str]]:
        pool = cognito.UserPool(
            self, "Users", user_pool_name=f"pacs-{config.stage}",
            self_sign_up_enabled=False, sign_in_aliases=cognito.SignInAliases(email=True),
            password_policy=cognito.PasswordPolicy(min_length=14, require_digits=True, require_lowercase=True,
                                                   require_uppercase=True, require_symbols=True),
            mfa=cognito.Mfa.REQUIRED, mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=config.retain_data,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )
        self.user_pool = pool
        self.client = pool.add_client(
            "Viewer", generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=list(config.callback_urls),
            ),
            prevent_user_existence_errors=True,
        )
        region = Stack.of(self).region
        CfnOutput(self, "UserPoolId", value=pool.user_pool_id)
        CfnOutput(self, "UserPoolClientId", value=self.client.user_pool_client_id)
        return (f"https://cognito-idp.{region}.amazonaws.com/{pool.user_pool_id}",
                [self.client.user_pool_client_id])
