// Package lambda serves the parts of the AWS Lambda REST API (2015-03-31)
// that matter for functions, on the worker's port next to /v1, so that
// unmodified clients (aws-cli, boto3, the SDKs) can create, update, list,
// delete and invoke Hearth functions.
//
// A function created here is the same function as one deployed through
// /v1: CreateFunction and UpdateFunctionCode deploy the zip through the
// same registry, with the Lambda settings (Handler, MemorySize, Timeout,
// Environment) written into its function.yaml, so revisions, start paths
// and `hearth ls` are shared. What Hearth has no place for (Runtime, Role,
// Description, the zip's hash) is kept in the package's own database,
// lambda.db in the data dir, next to the queue of asynchronous (Event)
// invocations and their records.
//
// Every request must carry an AWS Signature Version 4 signed with one of
// the operator's access keys (Keys); the signature is checked by signing
// the received request again with the AWS SDK for Go v2's signer and
// comparing in constant time. Without keys the API is refused unless the
// operator asked for Config.Insecure.
//
// Server is safe for concurrent use. The caller owns it: Start its
// asynchronous runners with the worker's lifetime, and Close it after the
// HTTP server and the worker have stopped.
package lambda
