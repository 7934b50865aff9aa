package v0042

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config ../../openapi/v0.0.42/oapi-codegen.yaml ../../openapi/v0.0.42/openapi.json
