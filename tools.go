//go:build tools

// Package tools pins the build tools this module runs with `go run`, so
// their versions live in go.mod and every machine uses the same ones.
package tools

import (
	_ "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen"
)
