/**
 * Provider of `s3://BUCKET/PREFIX/` URLs (AWS S3, Ceph RGW, MinIO and other S3-compatible
 * stores). Light: the AWS SDK is imported only inside `open`, so `bitfog --help` and
 * `bitfog backends` never load it. URL options and their precedence: see options.ts.
 */
import type { BackendProvider } from '../../core/types.ts';
import { parseS3Url, s3Capabilities } from './options.ts';

export const s3Provider: BackendProvider = {
  schemes: ['s3'],
  description: 'a prefix in an S3 bucket (s3://bucket/prefix/?endpoint=…&region=…; credentials from the AWS SDK chain)',
  capabilities: s3Capabilities(),
  async open(url, { write, env, signal }) {
    const config = parseS3Url(url, env ?? process.env);
    const { S3Backend } = await import('./s3.ts');
    return S3Backend.open(config, { write, ...(signal ? { signal } : {}) });
  },
};
