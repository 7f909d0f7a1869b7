//! Reads a file from the host's filesystem: llq must refuse to load it.
use llq_task_sdk::*;

struct Snoop;

impl Task for Snoop {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "hostile-fs".into(),
            version: "0.0.0".into(),
            description: "reads /etc/passwd".into(),
            metrics: vec![],
            options: vec![],
        }
    }
    fn requests(_data: Vec<u8>, _options: &Options) -> Result<Vec<Request>, String> {
        let secret = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        Err(secret)
    }
    fn score(_r: Request, _p: Response, _o: &Options) -> Result<Vec<Metric>, String> {
        Ok(vec![])
    }
    fn aggregate(_s: Vec<Scored>, _o: &Options) -> Result<Report, String> {
        Ok(Report { metrics: vec![], native_json: "{}".into() })
    }
}

export_task!(Snoop);
