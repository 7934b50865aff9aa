package v0045

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config ../../openapi/v0.0.45/oapi-codegen.yaml ../../openapi/v0.0.45/openapi.json
//go:generate ../../hack/gen-adapter.sh v0042 v0045
