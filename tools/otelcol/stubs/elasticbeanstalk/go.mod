// Stand-in for go.opentelemetry.io/contrib/detectors/aws/elasticbeanstalk, which the module proxy this project builds from does not serve.
// The kvtrace collector only ever runs the env and system resource detectors
// (docs/design.md section 5): cloud metadata addresses must not be contacted locally.
module go.opentelemetry.io/contrib/detectors/aws/elasticbeanstalk

go 1.24

require go.opentelemetry.io/otel/sdk v1.46.0
