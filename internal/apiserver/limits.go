package apiserver

// maxRequestBodyBytes bounds the body of a create, update or patch (uploads stream through their
// own subresource and are not bounded by it): 1 MiB, below etcd's 1.5 MiB request limit, so an
// oversized object gets 413 Request Entity Too Large instead of a 500 from etcd. The fields that
// could make an object large have their own limits (pkg/apis/apps/validation/limits.go), answered
// with a 422 naming the field.
const maxRequestBodyBytes = 1 << 20
