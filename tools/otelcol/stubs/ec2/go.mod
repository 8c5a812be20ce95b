// Stand-in for github.com/aws/aws-sdk-go-v2/service/ec2, the EC2 API client (19 MB of the
// collector's code, against the image's 120 MB budget). Two callers link it: the ec2 resource
// detector's `tags` (DescribeTags) and the eks detector's instance lookup (DescribeInstances:
// host type, image, account and k8s.cluster.name when the pod cannot reach the instance
// metadata service). Both call methods that fail here, saying so; the instance metadata
// service (github.com/aws/aws-sdk-go-v2/feature/ec2/imds, a module of its own) stays upstream's.
// The operator refuses the detectors that would need it with otelcol-kvtrace (docs/install.md).
module github.com/aws/aws-sdk-go-v2/service/ec2

go 1.24

require github.com/aws/aws-sdk-go-v2 v1.46.0
